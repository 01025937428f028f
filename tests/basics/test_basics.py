"""The bottom layer's helpers, each against the real thing: this process's /proc, real files, real sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stagewise.basics import files, ports, proc, programs, waiting

# -- waiting ---------------------------------------------------------------------------------------


def test_blocking_until_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", "found", "later"])
    assert waiting.blocking_until(lambda: next(values), timeout=5, interval=0.001) == "found"


def test_blocking_until_returns_the_last_value_at_the_deadline_after_a_last_check() -> None:
    calls: list[float] = []

    def never() -> bool:
        calls.append(time.monotonic())
        return False

    started = time.monotonic()
    assert waiting.blocking_until(never, timeout=0.3, interval=0.05) is False
    # it slept between checks (no spinning: about one check per interval), and checked at the deadline itself
    assert 4 <= len(calls) <= 9
    assert calls[-1] - started >= 0.3


def test_a_condition_that_holds_at_the_deadline_is_no_timeout() -> None:
    started = time.monotonic()
    assert waiting.blocking_until(lambda: time.monotonic() - started >= 0.2, timeout=0.2, interval=10)


def test_a_zero_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        waiting.blocking_until(lambda: False, timeout=1, interval=0)


def test_until_and_until_awaited_poll_on_the_event_loop() -> None:
    async def main() -> None:
        flag = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, flag.set)
        assert await waiting.until(flag.is_set, timeout=5, interval=0.01)

        answers = iter([None, None, 42])

        async def ask() -> int | None:
            await asyncio.sleep(0)
            return next(answers)

        assert await waiting.until_awaited(ask, timeout=5, interval=0.01) == 42
        assert await waiting.until(lambda: None, timeout=0.05, interval=0.01) is None

    asyncio.run(main())


def test_a_deadline_counts_down_and_never_below_zero() -> None:
    deadline = waiting.Deadline(0.05)
    assert not deadline.expired and 0 < deadline.remaining <= 0.05
    assert deadline.nap(1.0) <= 0.05
    time.sleep(0.06)
    assert deadline.expired and deadline.remaining == 0.0 and deadline.nap(1.0) == 0.0


# -- files -----------------------------------------------------------------------------------------


def test_write_atomic_replaces_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    files.write_atomic(target, "old")
    files.write_atomic(target, b"new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_atomic_gives_a_new_file_the_mode_asked(tmp_path: Path) -> None:
    files.write_atomic(tmp_path / "token", "secret\n", mode=0o600)
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600


def test_readers_never_see_half_a_file_while_writers_race(tmp_path: Path) -> None:
    target = tmp_path / "counts.json"
    contents = [str(n) * 100_000 for n in range(4)]
    files.write_atomic(target, contents[0])
    stop = threading.Event()

    def write(text: str) -> None:
        while not stop.is_set():
            files.write_atomic(target, text)

    writers = [threading.Thread(target=write, args=(c,)) for c in contents]
    for w in writers:
        w.start()
    try:
        for _ in range(300):
            assert target.read_text() in contents
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert [p.name for p in tmp_path.iterdir()] == ["counts.json"]


def test_write_new_makes_a_file_whole_once_and_one_writer_of_many_wins(tmp_path: Path) -> None:
    target = tmp_path / "token"
    start = threading.Barrier(8)
    won: list[str] = []

    def make(text: str) -> None:
        start.wait()
        if files.write_new(target, text * 10_000, mode=0o600):
            won.append(text)

    writers = [threading.Thread(target=make, args=(str(n),)) for n in range(8)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert len(won) == 1
    assert target.read_text() == won[0] * 10_000
    assert target.stat().st_mode & 0o777 == 0o600
    assert not files.write_new(target, "again")
    assert target.read_text() == won[0] * 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["token"]


def test_tail_and_last_line(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    assert files.tail(log) == "(no output)" and files.last_line(log) is None
    log.write_text("first\n" + "x" * 5000 + "\nlast words  \n\n")
    assert files.tail(log, 15) == "last words"
    assert files.last_line(log) == "last words"


def test_folder_names() -> None:
    assert files.is_folder_name("checkout-2.v1")
    for bad in ("", ".hidden", "a/b", "a b", "..", "x" * 129):
        assert not files.is_folder_name(bad)


def test_a_held_lock_is_refused_to_another_process(tmp_path: Path) -> None:
    lock = tmp_path / "one.lock"
    fd = files.hold_lock(lock)
    assert fd is not None
    try:
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from stagewise.basics import files; "
             "sys.exit(0 if files.hold_lock(Path(sys.argv[1])) is None else 1)", str(lock)], timeout=30)
        assert other.returncode == 0
    finally:
        os.close(fd)
    with files.locked(lock):
        pass


# -- proc ------------------------------------------------------------------------------------------


def test_stat_names_this_process_and_its_start_time() -> None:
    me = proc.stat(os.getpid())
    assert me is not None and not me.ended and me.ppid == os.getppid()
    assert proc.start_time(os.getpid()) == me.start_time
    assert proc.running(os.getpid(), me.start_time) and not proc.running(os.getpid(), me.start_time + 1)


def test_a_child_is_seen_by_its_command_line_environment_and_parent() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "marker"],
                             env={**os.environ, "STAGEWISE_TEST_MARK": "yes"}, start_new_session=True)
    try:
        assert waiting.blocking_until(lambda: proc.cmdline(child.pid) == [sys.executable, "-c",
                                                                          "import time; time.sleep(30)", "marker"],
                                      timeout=10, interval=0.01)
        assert b"STAGEWISE_TEST_MARK=yes" in (proc.environ(child.pid) or [])
        assert child.pid in proc.children(os.getpid())
        child_stat = proc.stat(child.pid)
        assert child_stat is not None and child_stat.session == child.pid
    finally:
        child.kill()
        child.wait()
    assert proc.stat(child.pid) is None and proc.cmdline(child.pid) is None and not proc.alive(child.pid)


def test_alive_reaps_an_exited_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert waiting.blocking_until(lambda: not proc.alive(child.pid), timeout=10, interval=0.01)
    child.returncode = 0  # reaped by alive(): tell Popen, so that it does not wait for it again


def test_holders_of_a_file_and_own_descriptors(tmp_path: Path) -> None:
    path = tmp_path / "held"
    path.write_text("")
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1]); time.sleep(30)",
                              str(path)])
    try:
        assert waiting.blocking_until(lambda: proc.holders(path) == [child.pid], timeout=10, interval=0.01)
        with path.open() as mine:
            assert mine.fileno() in proc.own_descriptors()
            assert mine.fileno() not in proc.inheritable_descriptors()
            os.set_inheritable(mine.fileno(), True)
            assert mine.fileno() in proc.inheritable_descriptors()
    finally:
        child.kill()
        child.wait()


def test_listening_sockets_and_their_holders() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        inodes = [inode for inode, (host, p) in proc.listening_sockets().items()
                  if p == port and str(host) == "127.0.0.1"]
        assert len(inodes) == 1
        # this process's own sockets are not counted among the holders: it asks about others
        assert proc.socket_holders(inodes) == {}


# -- ports -----------------------------------------------------------------------------------------


def test_free_port_avoids_the_ports_asked_and_can_be_bound() -> None:
    first = ports.free_port()
    second = ports.free_port(avoid={first})
    assert second != first
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", second))


def test_free_port_gives_up_when_every_answer_is_avoided() -> None:
    with pytest.raises(OSError, match="no free port"):
        ports.free_port(avoid=range(65536))


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:80", ("::1", 80)), (":9000", ("", 9000)),
    ("localhost:1", ("localhost", 1)),
])
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert ports.split_host_port(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "host:", "host:http", "host:0", "host:65536", "host:-1"])
def test_split_host_port_refuses(address: str) -> None:
    with pytest.raises(ValueError, match="not host:port"):
        ports.split_host_port(address)


def test_split_host_port_takes_port_zero_when_asked() -> None:
    assert ports.split_host_port("127.0.0.1:0", zero_ok=True) == ("127.0.0.1", 0)


# -- programs --------------------------------------------------------------------------------------


def test_a_program_runs_to_its_end_with_its_input_and_environment(tmp_path: Path) -> None:
    script = "import os, sys; d = sys.stdin.read(); print(d.upper(), os.environ['MARK']); sys.exit(3)"
    ended = asyncio.run(programs.run([sys.executable, "-c", script], timeout=30, stdin=b"body",
                                     env={**os.environ, "MARK": "here"}))
    assert (ended.code, ended.output, ended.timed_out) == (3, b"BODY here\n", False)
    source = tmp_path / "input"
    source.write_bytes(b"from a file")
    script = "import sys; print(sys.stdin.read()); print('said', file=sys.stderr)"
    ended = asyncio.run(programs.run([sys.executable, "-c", script], timeout=30, stdin=source, errors_apart=True))
    assert (ended.code, ended.output, ended.errors) == (0, b"from a file\n", b"said\n")


def test_a_program_past_its_limit_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; "
              "time.sleep(60)']); open(sys.argv[1], 'w').write(str(c.pid)); print('started', flush=True); "
              "time.sleep(60)")
    ended = asyncio.run(programs.run([sys.executable, "-c", script, str(pids)], timeout=1.0))
    assert ended.timed_out and ended.code == -9 and ended.output == b"started\n"
    grandchild = int(pids.read_text())
    assert waiting.blocking_until(lambda: not proc.running(grandchild), timeout=10, interval=0.01)


def test_a_cancelled_wait_kills_the_program(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def main() -> None:
        script = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
        task = asyncio.create_task(programs.run([sys.executable, "-c", script, str(pid_file)], timeout=60))
        assert await waiting.until(lambda: pid_file.exists() and pid_file.read_text(), timeout=10, interval=0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not proc.running(int(pid_file.read_text()))


def test_a_program_that_cannot_start_is_an_os_error() -> None:
    with pytest.raises(FileNotFoundError):
        asyncio.run(programs.run(["/nonexistent/program"], timeout=5))


def test_a_program_holds_no_descriptor_of_ours() -> None:
    # a listener or a pipe of the server, even one marked inheritable, must not outlive it in a program it ran
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    try:
        script = "import os, sys; os.fstat(int(sys.argv[1]))"
        ended = asyncio.run(programs.run([sys.executable, "-c", script, str(write_end)], timeout=30))
    finally:
        os.close(read_end)
        os.close(write_end)
    assert ended.code == 1 and b"Bad file descriptor" in ended.output
