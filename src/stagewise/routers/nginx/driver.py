"""The nginx router: a whole configuration per route table, checked, then a graceful reload.

One nginx per service (`worker_processes 1` by default), run detached with its
prefix, configuration, pid file and counts under `<state_dir>/nginx/<service>/`,
so it touches nothing of a system nginx. It needs no root: run as another user,
nginx runs its workers as that user and they write their logs and temp files
in the same folder. Run as root, its workers run as an unprivileged user and
write in a folder of their own outside the state directory (`runtime`).
`apply` renders the table (`config`), and:

- when nothing runs: starts nginx on it (the access log begins anew);
- when the configuration is unchanged: does nothing (no reload);
- else: writes `nginx.conf.new`, runs `nginx -t` on it — a refusal raises a
  `RouterError` with nginx's words and leaves the running configuration alone —
  then moves it in place and sends SIGHUP to the master. It waits for the new
  workers (or reports the reload failed), then for the old workers to finish
  the requests they hold: when `apply` returns, no request is in flight on an
  endpoint the table dropped, so the controller may stop it (nginx reports no
  per-endpoint in-flight count; `stats().inflight` stays empty).

Counters come from the JSON access log (`logs`), rotated as it is read so
that a count taken once a request has completed includes it, and in the
background when it grows past `rotate_bytes`; `boot` names the master (pid and
start time), which survives reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from stagewise.basics import files, proc, waiting
from stagewise.core.routes import RouteTable
from stagewise.core.stats import RouterStats
from stagewise.errors import RouterConfigError, RouterError
from stagewise.routers.common import process
from stagewise.routers.nginx import runtime
from stagewise.routers.nginx.config import Paths, render
from stagewise.routers.nginx.logs import ROTATE_BYTES, ROTATE_EVERY, AccessLog, Rotator

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
RELOAD_TIMEOUT = 10.0
OLD_WORKER_TIMEOUT = 12.0
"""Old workers get `worker_shutdown_timeout` (10 s) to finish; this is a little more."""


class NginxRouter:
    """Runs and reloads one nginx per service; implements `stagewise.routers.Router`."""

    def __init__(self, state_dir: Path, *, workers: int = 1, rotate_bytes: int = ROTATE_BYTES,
                 rotate_every: float = ROTATE_EVERY, worker_user: str | None = None,
                 runtime_root: Path = runtime.ROOT) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.workers = workers
        self.worker_user_name = worker_user
        """Who the workers run as when nginx starts as root (else `STAGEWISE_NGINX_USER`, else nobody)."""
        self.runtime_root = runtime_root
        self.rotate_bytes = rotate_bytes
        """The access log is read and emptied in the background once it is this large."""
        self.rotate_every = rotate_every
        self._locks: dict[str, asyncio.Lock] = {}
        self._rotators: dict[str, Rotator] = {}
        self._workers_as: tuple[runtime.WorkerUser | None] | None = None

    async def apply(self, *, table: RouteTable) -> None:
        async with self._lock(table.service):
            paths = self.paths(table.service)
            user = self._worker_user()
            paths.folder.mkdir(parents=True, exist_ok=True)
            if user is not None:
                runtime.prepare(paths, user)
            paths.temp.mkdir(mode=0o700, exist_ok=True)
            config = render(table, paths, workers=self.workers, user=(user.name, user.group) if user else None)
            master = process.daemon_pid(paths.pid)
            if master is None:
                await self._check(paths, config)
                paths.candidate.replace(paths.config)
                await self._start(paths)
            else:
                with contextlib.suppress(FileNotFoundError):
                    if paths.config.read_text() == config:
                        self._rotate_in_background(table.service, paths)
                        return
                await self._check(paths, config)
                paths.candidate.replace(paths.config)
                await self._reload(paths, master)
            self._rotate_in_background(table.service, paths)

    async def stats(self, *, service: str) -> RouterStats:
        async with self._lock(service):
            paths = self.paths(service)
            master = process.daemon_pid(paths.pid)
            if master is None:
                return RouterStats()  # nothing runs, so nothing was counted; the next apply starts it
            boot = _boot(master)
            self._rotate_in_background(service, paths)
            tallies = await asyncio.to_thread(self._access_log(paths).collect, master, boot)
            return RouterStats(boot=boot, releases={r: t.stats() for r, t in sorted(tallies.items())})

    async def stop(self, *, service: str) -> None:
        async with self._lock(service):
            paths = self.paths(service)
            master = process.daemon_pid(paths.pid)
            if master is not None:
                # SIGQUIT: a graceful shutdown, requests in flight finish
                await process.terminate(master, first=signal.SIGQUIT, timeout=STOP_TIMEOUT)
            with contextlib.suppress(FileNotFoundError):
                paths.pid.unlink()
            rotator = self._rotators.pop(service, None)
            if rotator is not None:
                await asyncio.to_thread(rotator.close)
            runtime.remove(paths)

    async def close(self) -> None:
        rotators, self._rotators = self._rotators, {}
        for rotator in rotators.values():
            await asyncio.to_thread(rotator.close)

    def _rotate_in_background(self, service: str, paths: Paths) -> None:
        """Keep a `Rotator` on the running master's log (a new one for a new master)."""
        master = process.daemon_pid(paths.pid)
        rotator = self._rotators.get(service)
        if master is None or (rotator is not None and rotator.master == master):
            return
        if rotator is not None:
            rotator.close()  # its master is gone: it has stopped already
        self._rotators[service] = Rotator(self._access_log(paths), master, _boot(master),
                                          rotate_bytes=self.rotate_bytes, every=self.rotate_every)

    def _access_log(self, paths: Paths) -> AccessLog:
        user = self._worker_user()
        return AccessLog(paths, owner=user.owner if user else None)

    def _worker_user(self) -> runtime.WorkerUser | None:
        """Who the workers run as (None: as this process's user); RouterConfigError for one that cannot be."""
        if self._workers_as is None:
            self._workers_as = (runtime.worker_user(self.worker_user_name),)
        return self._workers_as[0]

    # -- the nginx process ----------------------------------------------------------------

    async def _check(self, paths: Paths, config: str) -> None:
        """Write the candidate configuration and have `nginx -t` judge it; RouterError if refused."""
        paths.candidate.write_text(config)
        code, out = await _run(self._command(paths, paths.candidate, "-t", "-q"))
        if code != 0:
            raise RouterConfigError(f"nginx refused the configuration (the running one is unchanged): {out.strip()}")

    async def _start(self, paths: Paths) -> None:
        # workers outlive a master killed with SIGKILL and keep the listeners: end them gracefully first
        access_log = self._access_log(paths)
        for log_file in access_log.log_files():
            for orphan in proc.holders(log_file):
                await process.terminate(orphan, first=signal.SIGQUIT, timeout=STOP_TIMEOUT)
        # one log per master: counters start from zero with a new boot
        await asyncio.to_thread(access_log.clear)
        access_log.make_log()
        # output to a file, not a pipe: the daemon it forks may hold the pipe open long after
        code, _ = await _run(self._command(paths, paths.config), output=paths.output)
        if code != 0:
            raise RouterError(f"nginx did not start (exit {code}): {files.tail(paths.output)} "
                              f"{files.tail(paths.error_log)}")
        if not await waiting.until(lambda: _has_workers(paths), timeout=START_TIMEOUT, interval=0.01):
            raise RouterError(f"nginx did not start within {START_TIMEOUT:.0f} s: {files.tail(paths.error_log)}")

    async def _reload(self, paths: Paths, master: int) -> None:
        """SIGHUP; wait for new workers, then for the old ones to finish their requests."""
        old = set(proc.children(master))
        with contextlib.suppress(ProcessLookupError):
            os.kill(master, signal.SIGHUP)
        reloaded = await waiting.until(lambda: set(proc.children(master)) - old or not proc.alive(master),
                                       timeout=RELOAD_TIMEOUT, interval=0.005)
        if not reloaded or not proc.alive(master):
            raise RouterError(f"nginx did not reload: {files.tail(paths.error_log)}")
        # the old workers finish their requests within worker_shutdown_timeout; past that, carry on
        await waiting.until(lambda: not any(proc.alive(pid) for pid in old), timeout=OLD_WORKER_TIMEOUT,
                            interval=0.005)

    def _command(self, paths: Paths, config: Path, *flags: str) -> list[str]:
        nginx = process.binary("nginx", "nginx-light")
        return [nginx, *flags, "-p", f"{paths.folder}/", "-c", str(config), "-e", str(paths.error_log)]

    def paths(self, service: str) -> Paths:
        """Where the nginx of `service` keeps its files, and where its workers write."""
        if not files.is_folder_name(service):
            raise RouterConfigError(f"service name {service!r} cannot name a router directory")
        folder = self.state_dir / "nginx" / service
        # the workers' own folder when they run as another user: started as root, nginx makes them
        return Paths(folder, runtime.folder_of(folder, service, self.runtime_root) if os.geteuid() == 0 else None)

    def _lock(self, service: str) -> asyncio.Lock:
        return self._locks.setdefault(service, asyncio.Lock())


def _boot(master: int) -> str:
    started = proc.start_time(master)
    return f"{master}-{'' if started is None else started}"


def _has_workers(paths: Paths) -> bool:
    """Whether the nginx of the pid file runs with its workers forked."""
    master = process.daemon_pid(paths.pid)
    return master is not None and bool(proc.children(master))


async def _run(argv: list[str], output: Path | None = None) -> tuple[int, str]:
    """Run a program to its end; its exit code and output (kept in `output` instead, if given)."""
    try:
        with open(output, "ab") if output else contextlib.nullcontext(asyncio.subprocess.PIPE) as out_to:  # noqa: ASYNC230
            # close_fds: the daemon outlives us and must hold no descriptor of ours (a listener of the
            # API server, say); the default already, said here because it matters
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=out_to,
                                                        stderr=asyncio.subprocess.STDOUT, close_fds=True)
    except OSError as exc:
        raise RouterError(f"cannot run {argv[0]}: {exc}") from exc
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), START_TIMEOUT)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise RouterError(f"{' '.join(argv)} did not finish within {START_TIMEOUT:.0f} s") from exc
    return proc.returncode or 0, (out or b"").decode(errors="replace")
