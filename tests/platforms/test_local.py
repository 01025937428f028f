"""The local platform against real processes on loopback.

Each test runs its own event loop (`asyncio.run`) and stops every instance it
started, so no process outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from stagewise.basics import waiting
from stagewise.core.spec import ReleaseSpec
from stagewise.errors import PermanentError, PlatformRefusedError
from stagewise.platforms import InstanceState, PlatformView
from stagewise.platforms.local import LocalPlatform

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

SERVICE = "checkout"

# Listens on $LISTEN_PORT after $DELAY seconds; echoes its argv and env to its log.
LISTENER = textwrap.dedent(
    """
    import os, signal, socket, sys, time
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("argv", sys.argv[1:], "env", os.environ["LISTEN_PORT"], flush=True)
    time.sleep(float(os.environ.get("DELAY", "0")))
    s = socket.socket()
    s.bind(("127.0.0.1", int(os.environ["LISTEN_PORT"])))
    s.listen()
    print("listening", flush=True)
    while True:
        time.sleep(1)
    """
)


def sample_release(version: str = "v1", *flags: str, **readiness: object) -> ReleaseSpec:
    command = [
        sys.executable,
        "-m",
        "stagewise.examples.sample_service",
        "--port",
        "{port}",
        "--version",
        version,
        *flags,
    ]
    return ReleaseSpec.model_validate(
        {"version": version, "run": {"command": command}, "readiness": readiness or {"http": "/healthz"}}
    )


def listener_release(
    version: str = "v1", env: dict[str, str] | None = None, **readiness: object
) -> ReleaseSpec:
    return ReleaseSpec.model_validate(
        {
            "version": version,
            "run": {
                "command": [sys.executable, "-c", LISTENER, "--port={port}", "x{port}y"],
                "env": {"LISTEN_PORT": "{port}", **(env or {})},
            },
            "readiness": readiness or {"tcp": True},
        }
    )


def sleeper_release(version: str = "v1", timeout: float = 30) -> ReleaseSpec:
    script = "import time; print('sleeping', flush=True); time.sleep(60)"
    return ReleaseSpec.model_validate(
        {
            "version": version,
            "run": {"command": [sys.executable, "-c", script]},
            "readiness": {"tcp": True, "timeout": timeout},
        }
    )


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for a parent that is not us."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


@asynccontextmanager
async def local_platform(state_dir: Path) -> AsyncIterator[LocalPlatform]:
    platform = LocalPlatform(state_dir=state_dir)
    try:
        yield platform
    finally:
        view = await platform.observe(service=SERVICE, releases={})
        await platform.stop(service=SERVICE, ids=[i.id for i in view.instances], grace=1.0)
        await platform.close()


async def observe_until(
    platform: LocalPlatform,
    condition: Callable[[PlatformView], bool],
    releases: dict[str, ReleaseSpec],
    timeout: float = 10.0,
) -> tuple[PlatformView, list[str]]:
    """Observe until `condition` holds; returns the last view and every event seen."""
    events: list[str] = []
    views: list[PlatformView] = []

    async def holds() -> bool:
        views.append(await platform.observe(service=SERVICE, releases=releases))
        events.extend(views[-1].events)
        return condition(views[-1])

    if not await waiting.until_awaited(holds, timeout=timeout):
        raise AssertionError(f"condition not met within {timeout}s: {views[-1]}")
    return views[-1], events


def all_ready(count: int) -> Callable[[PlatformView], bool]:
    return lambda v: len(v.instances) == count and all(i.state is InstanceState.READY for i in v.instances)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def start_in_other_controller(state_dir: Path, release: ReleaseSpec, count: int) -> list[dict[str, object]]:
    """Start instances from a separate Python process that then exits, like a crashed controller."""
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from pathlib import Path
        from stagewise.core.spec import ReleaseSpec
        from stagewise.platforms.local import LocalPlatform

        async def main():
            platform = LocalPlatform(state_dir=Path(sys.argv[1]))
            release = ReleaseSpec.model_validate_json(sys.argv[2])
            started = await platform.start(service=sys.argv[3], release=release, count=int(sys.argv[4]))
            print(json.dumps([{"id": i.id, "pid": i.pid} for i in started]))

        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(state_dir), release.model_dump_json(), SERVICE, str(count)],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    started: list[dict[str, object]] = json.loads(out.stdout)
    return started


def test_port_is_substituted_in_argv_and_env_and_tcp_readiness(tmp_path: Path) -> None:
    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            release = listener_release(env={"DELAY": "0.3"})
            [instance] = await platform.start(service=SERVICE, release=release, count=1)
            assert instance.state is InstanceState.STARTING
            assert instance.id == f"{SERVICE}-v1-1"
            port = instance.address.rsplit(":", 1)[1]

            view, _ = await observe_until(platform, all_ready(1), {"v1": release})
            assert view.instances[0].ready_at is not None
            assert instance.log is not None
            log = read(instance.log)
            assert f"argv ['--port={port}', 'x{port}y'] env {port}" in log
            assert Path(instance.log).parent == tmp_path / "instances" / SERVICE

    run(main)


def test_http_readiness_then_serves(tmp_path: Path) -> None:
    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            release = sample_release("v1", "--startup-delay", "0.3", http="/healthz")
            await platform.start(service=SERVICE, release=release, count=1)
            first = await platform.observe(service=SERVICE, releases={"v1": release})
            assert first.instances[0].state is InstanceState.STARTING
            view, events = await observe_until(platform, all_ready(1), {"v1": release})
            assert events == []
            async with httpx.AsyncClient(trust_env=False) as client:
                response = await client.get(f"http://{view.instances[0].address}/")
            assert response.headers["X-Version"] == "v1"

    run(main)


def test_probes_run_concurrently(tmp_path: Path) -> None:
    """Five instances that accept TCP but never answer HTTP cost one probe timeout, not five."""

    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            release = listener_release(http="/healthz")
            await platform.start(service=SERVICE, release=release, count=5)
            assert await waiting.until(lambda: _logs(tmp_path).count("listening") >= 5, timeout=10)  # all five bound
            started = time.monotonic()
            view = await platform.observe(service=SERVICE, releases={"v1": release})
            assert time.monotonic() - started < 2.5
            assert [i.state for i in view.instances] == [InstanceState.STARTING] * 5

    run(main)


def read(path: str) -> str:
    return Path(path).read_text()


def _logs(state_dir: Path) -> str:
    return "".join(p.read_text() for p in (state_dir / "instances" / SERVICE).glob("*.log"))


def test_readiness_timeout_kills_and_counts_a_failure(tmp_path: Path) -> None:
    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            release = sleeper_release(timeout=0.5)
            [instance] = await platform.start(service=SERVICE, release=release, count=1)
            assert instance.pid is not None
            view, events = await observe_until(platform, lambda v: not v.instances, {"v1": release})
            assert view.failures == {"v1": 1}
            [event] = events
            assert instance.id in event and "not ready within 0.5s" in event
            assert f"log {instance.log}, last line: sleeping" in event
            assert gone(instance.pid)

    run(main)


def test_a_program_that_cannot_run_is_a_permanent_refusal(tmp_path: Path) -> None:
    """Missing or not executable: trying again fails the same way, so the controller backs off (not every tick)."""
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)

    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            for program, words in (("/nonexistent/checkout-server", r"'/nonexistent/checkout-server' not found"),
                                   (str(script), r"not-executable.sh' is not executable"),
                                   ("checkout\0server", r"embedded null byte")):
                release = ReleaseSpec.model_validate({"version": "v1", "run": {"command": [program, "{port}"]}})
                with pytest.raises(PlatformRefusedError, match=words) as caught:
                    await platform.start(service=SERVICE, release=release, count=1)
                assert isinstance(caught.value, PermanentError)
                view = await platform.observe(service=SERVICE, releases={"v1": release})
                assert view.instances == [] and view.failures == {}

    run(main)


def test_externally_killed_instance_is_reported_with_its_log(tmp_path: Path) -> None:
    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            release = sample_release()
            await platform.start(service=SERVICE, release=release, count=2)
            view, _ = await observe_until(platform, all_ready(2), {"v1": release})
            victim, survivor = view.instances
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)

            view, events = await observe_until(platform, lambda v: len(v.instances) == 1, {"v1": release})
            assert [i.id for i in view.instances] == [survivor.id]
            assert view.failures == {"v1": 1}
            [event] = events
            assert victim.id in event and "was killed by SIGKILL" in event
            assert f"log {victim.log}, last line: sample-service v1 listening on" in event
            again = await platform.observe(service=SERVICE, releases={"v1": release})
            assert again.events == [] and again.failures == {"v1": 1}

    run(main)


def test_fresh_platform_readopts_instances_of_a_dead_controller(tmp_path: Path) -> None:
    release = sample_release()
    started = start_in_other_controller(tmp_path, release, 2)

    async def main() -> None:
        async with local_platform(tmp_path) as first:
            view, events = await observe_until(first, all_ready(2), {"v1": release})
            assert events == []
            assert [(i.id, i.pid) for i in view.instances] == [(s["id"], s["pid"]) for s in started]

            second = LocalPlatform(state_dir=tmp_path)
            again = await second.observe(service=SERVICE, releases={})  # readiness comes from the records
            await second.close()
            assert again.instances == view.instances

            await first.stop(service=SERVICE, ids=[i.id for i in view.instances], grace=5)
            assert all(gone(int(str(s["pid"]))) for s in started)
            after = await first.observe(service=SERVICE, releases={})
            assert after.instances == [] and after.failures == {} and after.events == []

    run(main)


def test_recycled_pid_is_treated_as_dead_and_left_alone(tmp_path: Path) -> None:
    [started] = start_in_other_controller(tmp_path, sleeper_release(), 1)
    pid = int(str(started["pid"]))
    record = tmp_path / "instances" / SERVICE / f"{started['id']}.json"
    data = json.loads(record.read_text())
    data["proc_start"] += 1  # as if the pid now named a process started at another time
    record.write_text(json.dumps(data))

    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            view = await platform.observe(service=SERVICE, releases={})
            assert view.instances == [] and view.failures == {"v1": 1}
            [event] = view.events
            assert f"pid {pid} now belongs to another process" in event

    try:
        run(main)
        assert not gone(pid), "a process that is not ours any more must not be signalled"
    finally:
        os.killpg(pid, signal.SIGKILL)


def test_stop_sends_sigterm_and_is_idempotent(tmp_path: Path) -> None:
    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            release = sample_release()
            await platform.start(service=SERVICE, release=release, count=1)
            view, _ = await observe_until(platform, all_ready(1), {"v1": release})
            [instance] = view.instances
            assert instance.pid is not None and instance.log is not None

            started = time.monotonic()
            await platform.stop(service=SERVICE, ids=[instance.id], grace=10)
            assert time.monotonic() - started < 3  # it exited on SIGTERM, long before the grace
            assert gone(instance.pid)
            assert "stopped after" in read(instance.log)  # a graceful exit, not a kill

            await platform.stop(service=SERVICE, ids=[instance.id, "no-such-instance"], grace=1)
            view = await platform.observe(service=SERVICE, releases={"v1": release})
            assert view.instances == [] and view.failures == {} and view.events == []

    run(main)


def test_stop_kills_after_grace_when_sigterm_is_ignored(tmp_path: Path) -> None:
    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            release = listener_release(env={"IGNORE_TERM": "1"})
            await platform.start(service=SERVICE, release=release, count=1)
            view, _ = await observe_until(platform, all_ready(1), {"v1": release})
            [instance] = view.instances
            assert instance.pid is not None

            started = time.monotonic()
            await platform.stop(service=SERVICE, ids=[instance.id], grace=0.5)
            assert 0.5 <= time.monotonic() - started < 3
            assert gone(instance.pid)
            view = await platform.observe(service=SERVICE, releases={"v1": release})
            assert view.instances == [] and view.failures == {}

    run(main)


def test_seq_only_grows_across_stops_and_restarts(tmp_path: Path) -> None:
    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            first = await platform.start(service=SERVICE, release=sleeper_release("v1"), count=2)
            assert [(i.seq, i.id) for i in first] == [(1, f"{SERVICE}-v1-1"), (2, f"{SERVICE}-v1-2")]
            await platform.stop(service=SERVICE, ids=[first[1].id], grace=1)
            [third] = await platform.start(service=SERVICE, release=sleeper_release("v1"), count=1)
            assert third.seq == 3

            fresh = LocalPlatform(state_dir=tmp_path)
            [fourth] = await fresh.start(service=SERVICE, release=sleeper_release("v2"), count=1)
            await fresh.close()
            assert (fourth.seq, fourth.id) == (4, f"{SERVICE}-v2-4")
            view = await platform.observe(service=SERVICE, releases={})
            assert [i.seq for i in view.instances] == [1, 3, 4]

    run(main)


# Listens on $LISTEN_PORT, then writes numbered lines of 100 bytes, slowly enough that rotation interleaves. Each
# line is one write, as a logger's is: `print` makes two (the text, then its newline) when Python runs unbuffered
# (PYTHONUNBUFFERED, which the instance inherits from a test worker), and a rotation between them would start the
# live log with a bare newline.
CHATTY = textwrap.dedent(
    """
    import os, socket, time
    s = socket.socket()
    s.bind(("127.0.0.1", int(os.environ["LISTEN_PORT"])))
    s.listen()
    for i in range(100_000):
        os.write(1, (f"{i:08d} " + "x" * 90 + "\\n").encode())
        if i % 200 == 0:
            time.sleep(0.01)
    time.sleep(60)
    """
)


def test_a_growing_log_is_rotated_in_place_and_the_instance_keeps_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stagewise.platforms.local.LOG_MAX_BYTES", 200_000)
    release = ReleaseSpec.model_validate({
        "version": "v1",
        "run": {"command": [sys.executable, "-c", CHATTY], "env": {"LISTEN_PORT": "{port}"}},
        "readiness": {"tcp": True},
    })

    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            await platform.start(service=SERVICE, release=release, count=1)
            view, _ = await observe_until(platform, all_ready(1), {"v1": release})
            log = Path(view.instances[0].log)
            old = log.with_name(log.name + ".1")
            await observe_until(platform, lambda _: old.exists(), {"v1": release})
            for _ in range(40):  # rotated again and again while the instance writes
                await platform.observe(service=SERVICE, releases={"v1": release})
                await asyncio.sleep(0.02)
            # the rotated copy was over the limit; the live log restarted from its beginning, no hole of NULs
            assert old.stat().st_size > 200_000
            head = log.read_bytes()[:4096]
            assert b"\0" not in head and head[:8].isdigit()
            assert int(head[:8]) > 0, "the live log continues the numbering, it does not start over"

    run(main)


# Starts one instance like a controller, but is stopped by the test (SIGKILL) at the moment named in argv[4]:
# "spawned" once the instance's process exists and before its pid is recorded, "intent" just before the spawn.
KILLED_WHILE_STARTING = textwrap.dedent(
    """
    import asyncio, subprocess, sys, time
    from pathlib import Path
    from stagewise.core.spec import ReleaseSpec
    from stagewise.platforms.local import LocalPlatform

    def hang(what):
        print(what, flush=True)
        time.sleep(60)

    if sys.argv[4] == "spawned":
        save = LocalPlatform._save
        def save_or_hang(self, record):
            if record.pid:  # the record of a running process: the controller dies before it lands
                hang(record.pid)
            save(self, record)
        LocalPlatform._save = save_or_hang
    else:
        subprocess.Popen = lambda *args, **kwargs: hang("spawning")

    async def main():
        platform = LocalPlatform(state_dir=Path(sys.argv[1]))
        await platform.start(service=sys.argv[3], release=ReleaseSpec.model_validate_json(sys.argv[2]), count=1)

    asyncio.run(main())
    """
)


def kill_while_starting(state_dir: Path, release: ReleaseSpec, moment: str) -> str:
    """Run KILLED_WHILE_STARTING until it reaches `moment`, then SIGKILL it; what it said there."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WHILE_STARTING, str(state_dir), release.model_dump_json(),
                             SERVICE, moment], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        said = proc.stdout.readline().strip()
        assert said, "the controller process ended before the moment to kill it"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    return said


def processes_naming(marker: str) -> set[int]:
    """Live processes with `marker` in their command line."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes() and not gone(
                    int(entry.name)):
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def marked_release(marker: str) -> ReleaseSpec:
    """A tcp listener whose command line carries `marker`, so the test finds its processes whoever started them."""
    return ReleaseSpec.model_validate({
        "version": "v1", "run": {"command": [sys.executable, "-c", LISTENER, marker], "env": {"LISTEN_PORT": "{port}"}},
        "readiness": {"tcp": True},
    })


def test_an_instance_spawned_but_not_recorded_when_the_controller_is_killed_is_adopted(tmp_path: Path) -> None:
    release = marked_release(str(tmp_path))
    pid = 0
    try:
        pid = int(kill_while_starting(tmp_path, release, "spawned"))
        # Popen returns once the child's execve has closed its descriptors, before the kernel has set up its
        # new argv: for that moment /proc/PID/cmdline reads empty (seen on a loaded machine). So wait for it.
        assert waiting.blocking_until(lambda: processes_naming(str(tmp_path)) == {pid}, timeout=10, interval=0.01), \
            "the instance outlives its controller, as it must"

        async def main() -> None:
            async with local_platform(tmp_path) as platform:
                view = await platform.observe(service=SERVICE, releases={"v1": release})
                assert [i.pid for i in view.instances] == [pid], "the instance must be known, not an orphan"
                assert view.failures == {}
                [event] = view.events
                assert f"{SERVICE}-v1-1 (pid {pid})" in event and "adopted" in event
                view, _ = await observe_until(platform, all_ready(1), {"v1": release})
                assert processes_naming(str(tmp_path)) == {pid}, "no duplicate"
                # a fresh controller sees the same instance: the record is complete now
                again = await LocalPlatform(state_dir=tmp_path).observe(service=SERVICE, releases={})
                assert again.instances == view.instances and again.events == []

        run(main)
        assert processes_naming(str(tmp_path)) == set(), "the adopted instance is stopped like any other"
    finally:
        for orphan in processes_naming(str(tmp_path)) | ({pid} if pid else set()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(orphan, signal.SIGKILL)  # the instance leads its own session


def test_an_instance_intended_but_never_spawned_is_forgotten(tmp_path: Path) -> None:
    release = marked_release(str(tmp_path))
    assert kill_while_starting(tmp_path, release, "intent") == "spawning"
    assert processes_naming(str(tmp_path)) == set()

    async def main() -> None:
        async with local_platform(tmp_path) as platform:
            view = await platform.observe(service=SERVICE, releases={"v1": release})
            assert view.instances == [] and view.failures == {}
            [event] = view.events
            assert f"{SERVICE}-v1-1 was being started" in event and "forgotten" in event
            assert not list((tmp_path / "instances" / SERVICE).glob(f"{SERVICE}-*.json"))
            [instance] = await platform.start(service=SERVICE, release=release, count=1)
            assert instance.seq == 2, "an intent's number is never handed out again"
            await observe_until(platform, all_ready(1), {"v1": release})

    run(main)
