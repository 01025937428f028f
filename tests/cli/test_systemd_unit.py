"""`stagewise server --print-systemd-unit`: the unit systemd itself accepts, and how hardened it is.

Where systemd's tools are installed (`systemd-analyze`, Debian's `systemd`),
the unit must pass `systemd-analyze verify` — which also checks that the
program it starts exists — and `systemd-analyze security --offline` must rate
its exposure "OK" or better; elsewhere those checks skip, saying why. The
settings that follow from stagewise's design (the data plane outlives the
server) are checked on the text.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stagewise.cli.main import app
from stagewise.cli.server import program
from stagewise.cli.systemd import systemd_quote, systemd_unit

runner = CliRunner()
EXPOSURE_OK = 4.0
"""`systemd-analyze security` calls 2.0-4.9 "OK"; the unit is at about 1.7 (a process that starts others)."""


def print_unit(*args: str) -> str:
    result = runner.invoke(app, ["server", "--print-systemd-unit", *args], env={"STAGEWISE_STATE": ""})
    assert result.exit_code == 0, result.output
    return result.stdout


def settings_of(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`): the unit cannot be checked here")
    return found


def verify(tmp_path: Path, unit: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "stagewise.service"
    path.write_text(unit)
    return subprocess.run([systemd_analyze(), "verify", str(path)], capture_output=True, text=True, timeout=60)


def test_the_unit_keeps_the_data_plane_and_runs_hardened_as_a_named_user() -> None:
    s = settings_of(print_unit())
    assert s["KillMode"] == ["process"], "routers and instances outlive the server: stopping it must not kill them"
    assert s["User"] == ["stagewise"] and "DynamicUser" not in s and "PrivateTmp" not in s and "RemoveIPC" not in s
    assert s["Restart"] == ["on-failure"] and s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["StateDirectory"] == ["stagewise"] and s["ConfigurationDirectory"] == ["stagewise"]
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert s["CapabilityBoundingSet"] == [""] and s["AmbientCapabilities"] == [""]
    assert s["OOMPolicy"] == ["continue"]
    assert s["ExecStart"] == [f"{' '.join(program())} server --state %S/stagewise "
                              "--settings %E/stagewise/server.toml"]


def test_low_ports_grant_only_the_capability_to_bind_them() -> None:
    for unit in (print_unit("--low-ports"), print_unit("--listen", "0.0.0.0:443")):
        s = settings_of(unit)
        assert s["CapabilityBoundingSet"] == s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert "--listen 0.0.0.0:443" in settings_of(print_unit("--listen", "0.0.0.0:443"))["ExecStart"][0]


def test_options_given_are_passed_on_and_a_state_outside_var_lib_is_made_writable(tmp_path: Path) -> None:
    state = tmp_path / "state dir"
    s = settings_of(print_unit("--state", str(state), "--log-format", "json", "--tick", "500ms",
                               "--unit-user", "deliver", "--settings", str(tmp_path / "s.toml")))
    assert s["User"] == s["Group"] == ["deliver"]
    assert s["ReadWritePaths"] == [f'"{state}"'] and "StateDirectory" not in s
    assert s["ExecStart"][0].endswith(f'--state "{state}" --settings {tmp_path}/s.toml --log-format json '
                                      "--tick 0.5")


def test_the_units_command_line_is_one_the_server_takes(tmp_path: Path) -> None:
    unit = print_unit("--state", str(tmp_path), "--listen", "127.0.0.1:7421", "--log-format", "json",
                      "--log-level", "debug", "--tick", "0.5")
    words = shlex.split(settings_of(unit)["ExecStart"][0].replace("%E", "/etc"))
    server_args = words[words.index("server") + 1:]
    assert server_args == ["--state", str(tmp_path), "--settings", "/etc/stagewise/server.toml", "--listen",
                           "127.0.0.1:7421", "--log-level", "debug", "--log-format", "json", "--tick", "0.5"]
    again = runner.invoke(app, ["server", *server_args, "--print-systemd-unit"], env={"STAGEWISE_STATE": ""})
    assert again.exit_code == 0, again.output
    assert again.stdout == unit.replace("%E/stagewise/server.toml", "/etc/stagewise/server.toml")


@pytest.mark.parametrize(("arg", "word"), [
    ("/opt/stagewise/bin/stagewise", "/opt/stagewise/bin/stagewise"),
    ("/opt/my tools/stagewise", '"/opt/my tools/stagewise"'),
    ("/srv/100%/$HOME", '"/srv/100%%/$$HOME"'),
    ('say "hi"\\', '"say \\"hi\\"\\\\"'),
])
def test_a_word_of_the_command_line_is_taken_literally(arg: str, word: str) -> None:
    assert systemd_quote(arg) == word


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    for unit in (print_unit(), print_unit("--low-ports", "--state", "/var/lib/deliveries/prod"),
                 print_unit("--state", str(tmp_path), "--log-format", "json")):
        checked = verify(tmp_path, unit)
        print(f"systemd-analyze verify: exit {checked.returncode}, output {checked.stdout + checked.stderr!r}")
        assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked


def test_systemd_analyze_verify_is_no_rubber_stamp(tmp_path: Path) -> None:
    """The check above could pass whatever the unit said; it does not."""
    unit = print_unit().replace("KillMode=process", "KillMode=process\nKilMode=none")
    checked = verify(tmp_path, unit)
    assert "Unknown key 'KilMode'" in checked.stderr
    missing = systemd_unit(command=["/nonexistent/stagewise"], state=Path(".stagewise"), listen="127.0.0.1:7420")
    checked = verify(tmp_path, missing)
    assert checked.returncode != 0 and "/nonexistent/stagewise is not executable" in checked.stderr


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stagewise.service"
    path.write_text(print_unit())
    checked = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager", str(path)],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "SYSTEMD_COLORS": "0"})
    found = re.search(r"Overall exposure level for stagewise.service: (\d+\.\d+) (\w+)", checked.stdout)
    if found is None and "offline" in checked.stderr:
        pytest.skip(f"this systemd-analyze cannot rate a unit file offline: {checked.stderr.strip()}")
    assert found is not None, checked.stdout[-2000:] + checked.stderr
    with capsys.disabled():
        met = [line for line in checked.stdout.splitlines() if line.startswith("✓")]
        print(f"\nsystemd-analyze security: exposure {found.group(1)} {found.group(2)}, {len(met)} checks met")
    assert float(found.group(1)) <= EXPOSURE_OK, checked.stdout
