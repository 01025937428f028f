"""The ssh platform's host scripts, run by this machine's own `sh` (dash) as sshd would run them.

Over SSH the same text runs the same way; here each case is quick and can set
up what is hard to reach over a network: an intent left by a controller
killed mid-spawn, a process that died, a command line full of shell syntax.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagewise.basics import waiting
from stagewise.platforms import _ssh_scripts as scripts

pytestmark = pytest.mark.timeout(60)


def run(root: Path, script: str, *args: str) -> str:
    result = subprocess.run(["sh", "-c", script, "stagewise", str(root), "svc", *args],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def spawn(root: Path, instance: str, *argv: str, env: tuple[str, ...] = ()) -> list[str]:
    out = run(root, scripts.SPAWN, instance, "1", "v1", secrets.token_hex(8), str(len(env)), *env, *argv)
    return out.split()


def listing(root: Path) -> scripts.Listing:
    return scripts.parse_listing(run(root, scripts.LIST))


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for record in (tmp_path / "svc" / "instances").glob("*.rec"):
        fields = record.read_text().split()
        if fields[5] != "-":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(fields[5]), signal.SIGKILL)


def test_arguments_reach_the_program_verbatim_with_the_port_filled_in(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "argv"
    tricky = ["$(touch pwned)", "a b", "'quoted'", '"double"', "`tick`", "x{port}y{port}", "; rm -rf /", "{port}"]
    fields = spawn(root, "svc-v1-1", "python3", "-c",
                   "import json, os, sys; json.dump([sys.argv[1:], os.environ['GREETING'], os.getcwd()], "
                   f"open({str(out)!r}, 'w'))", *tricky, env=("GREETING=hello {port} $HOME",))
    assert fields[0] == "S"
    port = fields[2]
    def written() -> list[Any] | None:
        """What the program wrote, once it has written all of it (the file exists before its content does)."""
        try:
            found: list[Any] = json.loads(out.read_text())
        except (OSError, ValueError):
            return None
        return found

    said = waiting.blocking_until(written, timeout=10, interval=0.02)
    assert said is not None, "the program wrote nothing within 10 s"
    argv, greeting, cwd = said
    assert argv == [a.replace("{port}", port) for a in tricky]
    assert greeting == f"hello {port} $HOME"
    assert cwd == str(root / "svc" / "releases" / "v1")
    assert not (root / "svc" / "releases" / "v1" / "pwned").exists()


def test_a_listing_adopts_an_intent_whose_process_runs_and_forgets_an_old_one_that_never_ran(root: Path) -> None:
    instances = root / "svc" / "instances"
    instances.mkdir(parents=True)
    token = secrets.token_hex(8)
    # a controller wrote the intent and spawned the process, then died before recording its pid
    process = subprocess.Popen(["setsid", "sleep", "30"], env={**os.environ, scripts.LAUNCH_VARIABLE: token})
    now = int(time.time())
    (instances / "svc-v1-7.rec").write_text(f"svc-v1-7 7 v1 40007 {token} - - {now}\n")
    (instances / "svc-v1-8.rec").write_text(f"svc-v1-8 8 v1 40008 {secrets.token_hex(8)} - - {now - 600}\n")
    (instances / "svc-v1-9.rec").write_text(f"svc-v1-9 9 v1 40009 {secrets.token_hex(8)} - - {now}\n")
    try:
        seen = listing(root)
        assert seen.instances["svc-v1-7"].pid == process.pid, "the running process was not adopted"
        assert "svc-v1-8" not in seen.instances and any("svc-v1-8" in n and "forgotten" in n for n in seen.notes)
        assert seen.instances["svc-v1-9"].pid is None, "a young intent counts as an instance starting"
        assert (instances / "svc-v1-7.rec").read_text().split()[5] == str(process.pid)
    finally:
        process.kill()
        process.wait()


def test_a_dead_instance_is_reported_once_with_its_last_line_and_a_stopped_one_as_stopping(root: Path) -> None:
    dying = spawn(root, "svc-v1-1", "sh", "-c", "echo starting; sleep 0.2; echo 'it broke' >&2; exit 3")
    stopped = spawn(root, "svc-v1-2", "sleep", "30")
    assert dying[0] == "S" and stopped[0] == "S"
    assert run(root, scripts.STOP, "20", "svc-v1-2").split() == ["G", "svc-v1-2"]
    time.sleep(0.5)
    seen = listing(root)
    assert seen.dead == [("svc-v1-1", "v1", False, "it broke")]
    assert listing(root).dead == [] and listing(root).instances == {}


def test_stop_kills_what_ignores_sigterm_after_the_grace(root: Path) -> None:
    trapped = root / "trapped"  # written once the trap is set: a SIGTERM before it would end the program at once
    fields = spawn(root, "svc-v1-1", "sh", "-c", f"trap '' TERM; : > {trapped}; while :; do sleep 0.05; done")
    pid = int(fields[3])
    assert waiting.blocking_until(trapped.exists, timeout=10), "the program never set its trap"
    started = time.monotonic()
    assert run(root, scripts.STOP, "5", "svc-v1-1").split() == ["G", "svc-v1-1"]
    assert 0.4 <= time.monotonic() - started < 5
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_a_pid_that_now_names_another_process_is_never_signalled(root: Path) -> None:
    instances = root / "svc" / "instances"
    instances.mkdir(parents=True)
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        (instances / "svc-v1-1.rec").write_text(f"svc-v1-1 1 v1 40001 {secrets.token_hex(8)} {stranger.pid} 1 0\n")
        assert run(root, scripts.STOP, "1", "svc-v1-1").split() == ["G", "svc-v1-1"]
        assert stranger.poll() is None, "a process with another start time was signalled"
    finally:
        stranger.kill()
        stranger.wait()
