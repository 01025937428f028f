"""The wheel that `pip install` gets: every file stagewise needs at run time, nothing of its tests, and it works.

The wheel is built from this checkout (hatchling, as `pip wheel` builds it)
and installed into a new, clean virtual environment — not this one, and no
system site packages — from which `stagewise demo --json` runs its five
deliveries with the sample service and the builtin router it ships, and a
server serves the dashboard's static files and its metrics. Nothing is
imported from the checkout: the programs run in a directory of their own.

The dependencies come from a wheelhouse kept beside this environment
(`<venv>/wheelhouse`): the first run fills it from the package index (pip's
cache makes that quick where this environment was just installed), later
runs install without the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"
"""Wheels of the runtime dependencies, kept between runs (in the environment, which git ignores)."""
RUNTIME_SUFFIXES = {".css", ".js", ".svg", ".html", ".yaml", ".txt"}


def pip(python: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = pip(Path(sys.executable), "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out),
                str(ROOT))
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("stagewise-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clean venv with the wheel installed; its bin directory."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    offline = ["install", "--no-index", "--find-links", str(WHEELHOUSE), str(wheel)]
    started = time.monotonic()
    done = pip(python, *offline)
    if done.returncode != 0:  # a dependency not in the wheelhouse yet: fetch what the wheel needs, once
        fetched = pip(Path(sys.executable), "download", "--only-binary", ":all:", "--dest", str(WHEELHOUSE),
                      str(wheel), timeout=600)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        (WHEELHOUSE / wheel.name).unlink(missing_ok=True)  # stagewise itself is installed from the fresh build
        done = pip(python, *offline)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"\ninstalled the wheel and its dependencies into a clean venv in {time.monotonic() - started:.1f} s")
    yield venv / "bin"
    shutil.rmtree(venv, ignore_errors=True)


def clean_env() -> dict[str, str]:
    """This environment's variables less what would let the checkout or this venv leak in."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "STAGEWISE_STATE"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_the_wheel_holds_every_runtime_file_and_nothing_of_the_tests(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "src" / "stagewise"
    tracked = subprocess.run(["git", "ls-files", "src/stagewise"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    expected = {str(Path(t).relative_to("src")) for t in tracked}
    assert expected <= names, sorted(expected - names)  # every file of the package, .py or not
    assert (package / "api" / "static" / "vendor" / "htmx" / "LICENSE").exists()
    for needed in ("stagewise/api/static/vendor/htmx/LICENSE", "stagewise/api/static/vendor/uplot/LICENSE",
                   "stagewise/api/static/vendor/VERSIONS", "stagewise/api/static/dashboard.js",
                   "stagewise/api/templates/overview.html", "stagewise/sim/scenarios/default.yaml",
                   "stagewise/examples/sample_service.py", "stagewise/py.typed"):
        assert needed in names, needed
    outside = sorted(n for n in names if not n.startswith(("stagewise/", "stagewise-")))
    assert outside == [], outside
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/tests/" in n]
    assert not [n for n in names if "rollout-crd" in n or n.startswith("stagewise/tests")]
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Requires-Dist: prometheus_client" in metadata.replace("prometheus-client", "prometheus_client")
    licences = [n for n in names if ".dist-info/licenses/" in n]
    assert licences == [next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))], licences
    entry_points = zipfile.ZipFile(wheel).read(meta.replace("METADATA", "entry_points.txt")).decode()
    assert "stagewise = stagewise.cli.main:main" in entry_points
    print(f"\n{wheel.name}: {len(names)} files, {wheel.stat().st_size // 1024} KiB; not Python: "
          + ", ".join(sorted(n.removeprefix("stagewise/") for n in names
                             if Path(n).suffix in RUNTIME_SUFFIXES or n.endswith(("LICENSE", "VERSIONS")))))


def test_the_installed_wheel_runs_the_demo(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run([str(installed / "python"), "-c", "import stagewise; print(stagewise.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=clean_env(), check=True).stdout
    assert where.startswith(str(installed.parent)), f"stagewise imported from {where}, not from the clean venv"
    started = time.monotonic()
    demo = subprocess.run([str(installed / "stagewise"), "demo", "--json"], capture_output=True, text=True,
                          cwd=tmp_path, env=clean_env(), timeout=400)
    elapsed = time.monotonic() - started
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    outcomes = {s["name"]: s["outcome"] for s in json.loads(demo.stdout)["scenarios"]}
    print(f"\nstagewise demo --json from the wheel in {elapsed:.0f} s: {outcomes}")
    assert outcomes == {"canary v1→v2": "Succeeded", "canary v2→v3": "RolledBack",
                        "blue-green v2→v4": "RolledBack", "phased v2→v1": "Succeeded", "full v1→v2": "Succeeded"}


def test_the_installed_server_serves_its_dashboard_and_metrics(installed: Path, tmp_path: Path) -> None:
    state, log = tmp_path / "state", tmp_path / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen([str(installed / "stagewise"), "server", "--state", str(state), "--listen",
                                   "127.0.0.1:0"], cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL,
                                  stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (state / "server.json").exists():
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        url = json.loads((state / "server.json").read_text())["url"]
        with httpx.Client(base_url=url, timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    page = client.get("/")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert page.status_code == 200 and "/static/vendor/htmx/htmx.min.js" in page.text
            for path in ("/static/vendor/htmx/htmx.min.js", "/static/vendor/uplot/uPlot.iife.min.js",
                         "/static/vendor/uplot/uPlot.min.css", "/static/dashboard.js", "/static/dashboard.css"):
                assert client.get(path).status_code == 200, path
            assert "stagewise_build_info" in client.get("/metrics").text
    finally:
        server.terminate()
        server.wait(20)
