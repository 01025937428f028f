"""Running a short program to its end within a time limit, and leaving nothing of it behind.

A hook's command, a notification command, a metric provider's command and the
ssh platform's `ssh` clients are programs stagewise starts and waits for. Each
may hang, or be abandoned when its caller is cancelled (a delivery ends, the
server stops); either way nothing it started may outlive the wait, and no pipe
may stay open. So the program runs in a session of its own, and at its time
limit, or when the waiting task is cancelled, the whole session is killed and
reaped. (A program that means to outlive the wait leaves the session itself:
ssh's ControlPersist master does, and stays for the next command.)

Daemons (HAProxy, nginx, the builtin router, instances) are not run here: they
are meant to outlive the process that starts them.

What a failure means is the caller's: a program that cannot be started raises
OSError, one that overran its limit is `Finished.timed_out`; nothing here
raises a stagewise error."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

KILL_WAIT = 5.0
"""Seconds to wait, after killing a program's session, for its pipes to close (one of its children may have
left the session and kept them open: then what it wrote is given up)."""


@dataclass(frozen=True)
class Finished:
    """How a program ended."""

    code: int | None
    """Its exit status; negative for a signal (-9 when it was killed at its limit)."""
    output: bytes
    """What it wrote on stdout (and stderr, unless `errors_apart`), until it ended or was killed."""
    errors: bytes
    """What it wrote on stderr, with `errors_apart`; else empty."""
    timed_out: bool
    """It ran past its time limit and was killed."""
    seconds: float
    """From its start to its end."""


async def run(argv: Sequence[str], *, timeout: float, stdin: bytes | Path | None = None,
              env: Mapping[str, str] | None = None, errors_apart: bool = False) -> Finished:
    """Run `argv` (never through a shell) and wait at most `timeout` seconds for it to end.

    `stdin`: bytes to write to it, a file to read from, or nothing (/dev/null). `env`: its whole
    environment (default this process's). Raises OSError when it cannot be started. Cancelling the
    caller kills it (and what it started) before the cancellation goes on.
    """
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        source: int | IO[bytes] = subprocess.DEVNULL
        if isinstance(stdin, bytes):
            source = asyncio.subprocess.PIPE
        elif stdin is not None:
            source = stack.enter_context(stdin.open("rb"))  # a local file: opening it does not block for long
        # close_fds (the default, said because it matters): it holds no descriptor of ours, such as a listener
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=source, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if errors_apart else asyncio.subprocess.STDOUT,
            env=dict(env) if env is not None else None, start_new_session=True, close_fds=True)
    talk = asyncio.ensure_future(proc.communicate(stdin if isinstance(stdin, bytes) else None))
    try:
        output, errors = await asyncio.wait_for(asyncio.shield(talk), timeout)
        timed_out = False
    except TimeoutError:
        output, errors = await _end(proc, talk)
        timed_out = True
    except asyncio.CancelledError:
        await asyncio.shield(_end(proc, talk))
        raise
    return Finished(code=proc.returncode, output=output or b"", errors=errors or b"", timed_out=timed_out,
                    seconds=time.monotonic() - started)


async def _end(proc: asyncio.subprocess.Process, talk: asyncio.Future[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """Kill the program's session (it and what it started) and reap it; what it wrote until then."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        return await asyncio.wait_for(talk, KILL_WAIT)
    except (TimeoutError, OSError):
        await proc.wait()
        return b"", b""
