# Sourced by the other scripts: a virtual environment in .venv with stagewise installed.
# On a fresh Debian 12, python3 may lack venv; as root we install it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        echo "python3 has no venv module; install it: sudo apt-get install python3-venv" >&2
        exit 2
    fi
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v -i "warning" || true
target="."; [ -n "${EXTRAS:-}" ] && target=".[${EXTRAS}]"
.venv/bin/python -m pip install -q -e "$target" 2>&1 | grep -v -i "warning" || true
.venv/bin/python -c 'import stagewise' || { echo "stagewise did not install" >&2; exit 2; }
