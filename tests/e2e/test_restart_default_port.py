"""`stagewise server` stopped and started again on its default address, 127.0.0.1:7420, as a user does.

The crash-safe design promises that a server can go away (stopped, or killed)
and come back while the data plane serves on. So this test does what a user
does, in a project directory: `stagewise init`, `stagewise server` (default
listen, default state `./.stagewise`), `stagewise apply` of the example spec
(builtin router), then stops the server and starts it again — on the same
port, which must be free again: no process the server started may hold the
server's own socket. Users keep calling the service the whole time and must
see no failed request.

It is the only test on 7420. A file lock serialises it against any other run
of itself (another worker, another checkout's test run on this machine), and
its fixture first ends whatever a crashed earlier run left behind: every
process whose working directory is its project directory (the server, the
router, the instances all inherit it) or whose command line names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stagewise.basics import waiting
from stagewise.examples.load import LoadInBackground
from tests.e2e.dataplane import listening_on, ss_lines

pytestmark = [pytest.mark.integration, pytest.mark.default_port, pytest.mark.timeout(180)]

DEFAULT = ("127.0.0.1", 7420)
PROJECT = Path("/tmp/stagewise-test-default-port")
"""A fixed directory, so that a later run finds what a crashed run left behind."""
LOCK = Path("/tmp/stagewise-test-default-port.lock")
SERVICE_LISTEN = "127.74.20.1:8080"
"""The example's port 8080, on a loopback address of its own: no other test listens there."""


def project_processes() -> list[int]:
    """Pids of the processes a run of this test started: the project directory is their cwd or in their argv."""
    found = []
    marker = str(PROJECT).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        if cwd == str(PROJECT) or cwd.startswith(f"{PROJECT}/") or marker in argv:
            found.append(int(entry.name))
    return found


def end_project_processes() -> None:
    """SIGKILL every process of a run of this test, and wait until none is left."""
    deadline = time.monotonic() + 15
    while pids := project_processes():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert time.monotonic() < deadline, f"processes of {PROJECT} survive SIGKILL: {pids}"
        time.sleep(0.05)


def stagewise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stagewise", *args], cwd=PROJECT, env=user_env(),
                          capture_output=True, text=True, timeout=60)


def user_env() -> dict[str, str]:
    """The environment of a user whose PATH finds this stagewise's Python as `python3` (the example runs it)."""
    env = {k: v for k, v in os.environ.items() if k != "STAGEWISE_STATE"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class Server:
    """`stagewise server` with no options, in the project directory."""

    def __init__(self) -> None:
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.runs += 1
        with open(PROJECT / f"server-{self.runs}.log", "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "stagewise", "server"], cwd=PROJECT, env=user_env(),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        if not waiting.blocking_until(self._answers, timeout=30):
            raise AssertionError(f"server run {self.runs} did not answer on 7420 within 30 s:\n{self.log()}")

    def _answers(self) -> bool:
        """Whether this run of the server answers on 7420 and has written its server.json."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server run {self.runs} exited with {self.proc.returncode}:\n{self.log()}\n"
                                 f"ss -ltnp on 7420:\n{ss_lines(DEFAULT[1])}")
        try:
            if httpx.get("http://127.0.0.1:7420/api/v1/health", timeout=1, trust_env=False).status_code != 200:
                return False
        except httpx.HTTPError:
            return False
        info = json.loads((PROJECT / ".stagewise" / "server.json").read_text())
        return bool(info["pid"] == self.proc.pid)

    def end(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        self.proc.wait(20)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(PROJECT.glob("server-*.log")))


@pytest.fixture
def project() -> Iterator[Server]:
    """The project directory with the example spec, its port to ourselves, and nothing left of earlier runs."""
    LOCK.touch()
    with LOCK.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run of this test waits here for its turn on 7420
        end_project_processes()
        shutil.rmtree(PROJECT, ignore_errors=True)
        PROJECT.mkdir()
        assert not listening_on(DEFAULT[1], DEFAULT[0]), (
            "127.0.0.1:7420 is taken by a process this test did not start:\n" + ss_lines(DEFAULT[1]))
        server = Server()
        try:
            init = stagewise("init")
            assert init.returncode == 0, init.stderr
            spec = PROJECT / "stagewise.yaml"
            spec.write_text(spec.read_text().replace("127.0.0.1:8080", SERVICE_LISTEN))
            yield server
        finally:
            end_project_processes()
            shutil.rmtree(PROJECT, ignore_errors=True)


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_server_restarts_on_its_default_port_while_the_service_serves(
        project: Server, stop_with: signal.Signals) -> None:
    project.start()
    applied = stagewise("apply", "stagewise.yaml")
    assert applied.returncode == 0, applied.stderr
    url = f"http://{SERVICE_LISTEN}/"
    assert waiting.blocking_until(lambda: served(url), timeout=60, interval=0.1), \
        f"the example is not served at {url}:\n{project.log()}"

    load = LoadInBackground(url, connections=2, rate=100, max_seconds=90, max_requests=20_000).start()
    try:
        time.sleep(0.5)
        project.end(stop_with)
        time.sleep(0.3)  # the service serves on without a server for a moment
        holders = listening_on(DEFAULT[1], DEFAULT[0])
        assert not holders, f"the stopped server's port is still held:\n{ss_lines(DEFAULT[1])}"
        if stop_with is signal.SIGTERM:  # its last words: what runs on, by pid and port
            router = listening_on(8080, SERVICE_LISTEN.split(":")[0])[0].pids
            last = (PROJECT / "server-1.log").read_text()
            assert f"sample: router builtin on {SERVICE_LISTEN} (pid {', '.join(map(str, sorted(router)))})" in last
            assert "instances: sample-v1-1 pid " in last and "stagewise delete SERVICE" in last
        project.start()
        status = stagewise("status", "sample", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["phase"] == "Succeeded"
        time.sleep(0.5)
    finally:
        report = load.stop()
    assert report.requests > 50, report
    assert report.non_2xx == 0 and report.socket_errors == 0, (
        report.status_counts, report.socket_error_kinds, report.socket_error_sample)
    assert report.by_version == {"v1": report.responses}
    project.end(signal.SIGTERM)
    # uvicorn, once shut down, raises the signal again, so the exit is by SIGTERM
    assert project.proc is not None and project.proc.returncode in (0, -signal.SIGTERM), project.log()


def served(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False
