"""The local platform: instances are detached processes on this machine, on loopback ports.

Why it is built this way:

- Instances must outlive the controller (docs/architecture.md: a controller restart never
  drops a request), so each runs in its own session and its record lives on
  disk under `state_dir/instances/<service>/`. A new `LocalPlatform` re-adopts
  them by pid *and* kernel start time, because by then a bare pid may belong to
  an unrelated process.
- It never signals a process whose start time does not match its record, and it
  never runs a shell: `run.command` is an argv list with `{port}` substituted.
- An instance's record is written *before* its process is spawned (id, release,
  port, command and a launch token, no pid yet: the intent), and completed with
  the pid and start time right after. A controller killed in between leaves an
  intent; the next one finds the process by the token in its environment and
  adopts it, or, with no such process, forgets the intent. So a crash never
  leaves an instance running unknown, holding its port beside a duplicate.
- `observe` stays cheap for ready instances (one small /proc read each); only
  starting instances are probed, all at once, so a hundred of them cost one probe
  timeout, not a hundred.
- An instance writes its output to its own log file, opened for appending; a
  log that grows past `LOG_MAX_BYTES` is copied to `<log>.1` and truncated in
  place (logrotate's copytruncate: the process keeps its file descriptor, and
  with O_APPEND its next write lands at the new end). Lines written between
  the copy and the truncation are lost — the usual price of copytruncate.

Linux only: liveness and start times come from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from stagewise.basics import files, ports
from stagewise.core.spec import ReleaseSpec
from stagewise.errors import PlatformError, PlatformRefusedError
from stagewise.platforms import Instance, InstanceState, PlatformView
from stagewise.platforms._local_processes import (
    LAUNCH_VARIABLE,
    Child,
    children,
    ending,
    find_launched,
    proc_stat,
    runs,
    signal_group,
    sweep_children,
    wait_gone,
)

PROBE_TIMEOUT = 1.0
"""Seconds one readiness probe may take; a slow probe just means "not ready yet"."""
LOG_MAX_BYTES = 16 << 20
"""An instance log larger than this is rotated (one old file kept) when the instance is next observed."""
KILL_WAIT = 2.0
"""Seconds to wait for a SIGKILLed process to disappear before giving up on it."""

_META = "_service.json"  # service names are DNS labels, so no instance id can collide


@dataclass
class _Record:
    """What survives a controller restart about one instance."""

    id: str
    seq: int
    service: str
    release: str
    port: int
    pid: int
    proc_start: int
    """Field 22 of /proc/PID/stat: tells this process from a later one with the same pid."""
    started_at: float
    ready_at: float | None
    log: str
    argv: list[str]
    readiness_http: str | None
    readiness_tcp: bool
    readiness_timeout: float
    stopping: bool = False
    """Set before stop() signals it, so its exit is not counted as a failure."""
    launch: str = ""
    """The token in the instance's environment (LAUNCH_VARIABLE), to find it if its pid was never recorded."""


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(_Record))
_INTENT_OWNER = "intent_of"
"""Key of an intent (a record written before its process exists): [pid, start time] of the writer."""


def _free_port(taken: set[int]) -> int:
    """A loopback port nobody listens on now; not one of ours still coming up."""
    try:
        return ports.free_port(avoid=taken)
    except OSError as exc:
        raise PlatformError(f"could not find a free loopback port: {exc}") from exc


def _rotate(log: Path, max_bytes: int) -> None:
    """Copy a log grown past `max_bytes` to `<log>.1` and truncate it in place (see the module's notes)."""
    try:
        if log.stat().st_size <= max_bytes:
            return
        shutil.copyfile(log, log.with_name(log.name + ".1"))
        os.truncate(log, 0)
    except OSError:
        return  # a log that cannot be rotated now is tried again at the next observe


def _record_of(data: dict[str, Any]) -> _Record:
    return _Record(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})


def _this_process() -> tuple[int, int]:
    """(pid, start time) of this controller process."""
    stat = proc_stat(os.getpid())
    return os.getpid(), stat[1] if stat else -1


def _spawn_failure(instance_id: str, program: str, exc: OSError | ValueError) -> PlatformError | PlatformRefusedError:
    """The error for a spawn that failed: a refusal when trying again cannot help, else worth a retry."""
    if isinstance(exc, FileNotFoundError):
        return PlatformRefusedError(f"cannot start {instance_id}: program {program!r} not found "
                                    "(run.command[0] must be an executable path or a name on PATH)")
    if isinstance(exc, PermissionError):
        return PlatformRefusedError(f"cannot start {instance_id}: {program!r} is not executable")
    if isinstance(exc, ValueError):  # a NUL byte in the argv or the environment
        return PlatformRefusedError(f"cannot start {instance_id}: {exc}")
    return PlatformError(f"cannot start {instance_id}: {exc}")


def _atomic_write(path: Path, data: dict[str, Any]) -> None:
    files.write_atomic(path, json.dumps(data, indent=1, sort_keys=True))


class LocalPlatform:
    """Starts instances as detached local processes and finds them again after a restart."""

    def __init__(self, state_dir: Path) -> None:
        self._root = Path(state_dir) / "instances"
        self._client: httpx.AsyncClient | None = None

    # -- the Platform protocol -------------------------------------------------------------

    async def start(self, *, service: str, release: ReleaseSpec, count: int) -> list[Instance]:
        """Spawn `count` instances; does not wait for them to be ready.

        If spawning fails midway, the instances already started keep their records,
        so the next `observe` reports them.
        """
        directory = self._service_dir(service)
        directory.mkdir(parents=True, exist_ok=True)
        taken = {r.port for r in self._records(service, [])}
        started = []
        for _ in range(count):
            seq = self._next_seq(service)
            instance_id = f"{service}-{release.version}-{seq}"
            port = _free_port(taken)
            taken.add(port)
            record = self._spawn(service, instance_id, seq, port, release, directory)
            started.append(self._instance(record))
        return started

    async def observe(self, *, service: str, releases: dict[str, ReleaseSpec]) -> PlatformView:
        """Reap the dead, probe the starting, and report the live; ready ones are not re-probed."""
        events: list[str] = []
        sweep_children()
        alive = []
        for record in self._records(service, events):
            ended = ending(record)
            if ended is None:
                alive.append(record)
                continue
            self._forget(record)
            if not record.stopping:
                self._count_failure(service, record.release)
                events.append(f"instance {record.id} (pid {record.pid}) {ended}; {self._log_note(record)}")

        for record in alive:
            _rotate(Path(record.log), LOG_MAX_BYTES)
        starting = [r for r in alive if r.ready_at is None]
        ready = await asyncio.gather(*(self._probe(r, releases.get(r.release)) for r in starting))
        now = time.time()
        killed = []
        for probed, is_ready in zip(starting, ready, strict=True):
            current = self._reload(probed)  # a concurrent stop() may have changed or removed it
            if current is None:
                alive.remove(probed)
                continue
            if is_ready:
                current.ready_at = now
                self._save(current)
                alive[alive.index(probed)] = current
                continue
            timeout = self._readiness(current, releases.get(current.release))[2]
            if now - current.started_at > timeout and not current.stopping:
                signal_group(current, signal.SIGKILL, current.id)
                self._forget(current)
                self._count_failure(service, current.release)
                alive.remove(probed)
                killed.append(current)
                events.append(
                    f"instance {current.id} (pid {current.pid}) was not ready within {timeout:g}s "
                    f"and was killed; {self._log_note(current)}"
                )
        await wait_gone(killed, KILL_WAIT)

        return PlatformView(
            instances=[self._instance(r) for r in sorted(alive, key=lambda r: r.seq)],
            failures=self._meta(service)["failures"],
            events=events,
        )

    async def stop(self, *, service: str, ids: list[str], grace: float = 10.0) -> None:
        """SIGTERM each process group, SIGKILL what is left after `grace`; unknown ids are fine."""
        wanted = set(ids)
        records = [r for r in self._records(service, []) if r.id in wanted]
        for record in records:
            record.stopping = True
            self._save(record)
            signal_group(record, signal.SIGTERM, record.id)
        pending = await wait_gone(records, grace)
        for record in pending:
            signal_group(record, signal.SIGKILL, record.id)
        stuck = await wait_gone(pending, KILL_WAIT)
        for record in records:
            if record not in stuck:
                self._forget(record)
        sweep_children()
        if stuck:
            names = ", ".join(f"{r.id} (pid {r.pid})" for r in stuck)
            raise PlatformError(f"still running after SIGKILL: {names}")

    async def preflight(self, *, service: str, release: ReleaseSpec) -> list[str]:
        """Nothing to check ahead: a program that cannot start is refused when it is started."""
        return []

    async def close(self) -> None:
        """Close the probe client; instances keep running."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- spawning ----------------------------------------------------------------------------

    def _spawn(
        self, service: str, instance_id: str, seq: int, port: int, release: ReleaseSpec, directory: Path
    ) -> _Record:
        def substitute(value: str) -> str:
            # Plain replace, not str.format: other braces in a command are the user's own.
            return value.replace("{port}", str(port)).replace("{host}", "127.0.0.1")

        argv = [substitute(a) for a in release.run.command]
        env = {k: substitute(v) for k, v in release.run.env.items()}
        log = directory / f"{instance_id}.log"
        http, tcp, timeout = self._readiness(None, release)
        record = _Record(
            id=instance_id, seq=seq, service=service, release=release.version, port=port, pid=0, proc_start=-1,
            started_at=time.time(), ready_at=None, log=str(log), argv=argv, readiness_http=http,
            readiness_tcp=tcp, readiness_timeout=timeout, launch=secrets.token_hex(16),
        )
        path = self._record_path(record)
        self._save_intent(record)
        try:
            with log.open("ab") as logfile:
                popen = subprocess.Popen(
                    argv,
                    env=os.environ | env | {LAUNCH_VARIABLE: record.launch},
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                )
        except (OSError, ValueError) as exc:
            log.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            raise _spawn_failure(instance_id, argv[0], exc) from exc
        # An unreaped child stays in /proc even if it already exited, so this read succeeds.
        stat = proc_stat(popen.pid)
        record.pid, record.proc_start = popen.pid, stat[1] if stat else -1
        children[popen.pid] = Child(popen=popen, proc_start=record.proc_start, record=path)
        self._save(record)
        return record

    # -- readiness -----------------------------------------------------------------------------

    @staticmethod
    def _readiness(record: _Record | None, spec: ReleaseSpec | None) -> tuple[str | None, bool, float]:
        """(http path, tcp, timeout): from the spec when given, else from the record."""
        if spec is not None:
            r = spec.readiness
            return r.http, r.tcp, r.timeout
        assert record is not None
        return record.readiness_http, record.readiness_tcp, record.readiness_timeout

    async def _probe(self, record: _Record, spec: ReleaseSpec | None) -> bool:
        http = self._readiness(record, spec)[0]
        try:
            if http is not None:
                response = await self._http().get(f"http://127.0.0.1:{record.port}{http}")
                return 200 <= response.status_code < 400
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", record.port), PROBE_TIMEOUT
            )
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        except (httpx.HTTPError, OSError, TimeoutError):
            return False

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # No proxies from the environment (loopback only) and no pooled connections:
            # an instance is probed until ready and then left alone.
            self._client = httpx.AsyncClient(
                timeout=PROBE_TIMEOUT,
                trust_env=False,
                limits=httpx.Limits(max_keepalive_connections=0),
                headers={"Connection": "close", "User-Agent": "stagewise-probe"},
            )
        return self._client

    # -- records ---------------------------------------------------------------------------------

    def _service_dir(self, service: str) -> Path:
        if not files.is_folder_name(service):
            raise PlatformRefusedError(f"invalid service name {service!r}")
        return self._root / service

    def _record_path(self, record: _Record) -> Path:
        return self._service_dir(record.service) / f"{record.id}.json"

    def _records(self, service: str, events: list[str]) -> list[_Record]:
        directory = self._service_dir(service)
        if not directory.is_dir():
            return []
        records = []
        for path in sorted(directory.glob("*.json")):
            if path.name == _META:
                continue
            try:
                data = json.loads(path.read_text())
                record = _record_of(data) if data.get("pid") is not None else self._settle_intent(data, events)
            except FileNotFoundError:
                continue  # stopped meanwhile
            except (OSError, ValueError, TypeError) as exc:
                events.append(f"ignoring unreadable instance record {path}: {exc}")
                continue
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda r: r.seq)

    def _settle_intent(self, data: dict[str, Any], events: list[str]) -> _Record | None:
        """The record of an instance whose spawn was never recorded: adopted if its process runs, else forgotten.

        None while the controller process that wrote the intent still runs (it is spawning it
        now), and when there is no process to adopt.
        """
        writer = data.get(_INTENT_OWNER) or [0, -1]
        if (writer[0], writer[1]) != _this_process() and runs(int(writer[0]), int(writer[1])):
            return None
        record = _record_of({**data, "pid": 0, "proc_start": -1})
        found = find_launched(record.launch) if record.launch else None
        if found is None:
            self._forget(record)
            events.append(f"instance {record.id} was being started when its controller stopped, and does not run; "
                          "forgotten")
            return None
        record.pid, record.proc_start = found
        self._save(record)
        events.append(f"instance {record.id} (pid {record.pid}) was started but not recorded when its controller "
                      "stopped; adopted")
        return record

    def _reload(self, record: _Record) -> _Record | None:
        try:
            data = json.loads(self._record_path(record).read_text())
        except (OSError, ValueError):
            return None
        return _record_of(data) if data.get("pid") is not None else None

    def _save(self, record: _Record) -> None:
        _atomic_write(self._record_path(record), dataclasses.asdict(record))

    def _save_intent(self, record: _Record) -> None:
        """The record before its process exists: no pid, no start time; who writes it."""
        _atomic_write(self._record_path(record), dataclasses.asdict(record) | {
            "pid": None, "proc_start": None, _INTENT_OWNER: list(_this_process())})

    def _forget(self, record: _Record) -> None:
        self._record_path(record).unlink(missing_ok=True)

    def _meta(self, service: str) -> dict[str, Any]:
        path = self._service_dir(service) / _META
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            raise PlatformError(f"cannot read {path}: {exc}") from exc
        data.setdefault("next_seq", 1)
        data.setdefault("failures", {})
        return data

    def _next_seq(self, service: str) -> int:
        meta = self._meta(service)
        # If the meta file was lost, never hand out a number a live record already holds.
        seq = max([int(meta["next_seq"])] + [r.seq + 1 for r in self._records(service, [])])
        meta["next_seq"] = seq + 1
        _atomic_write(self._service_dir(service) / _META, meta)
        return seq

    def _count_failure(self, service: str, release: str) -> None:
        meta = self._meta(service)
        meta["failures"][release] = int(meta["failures"].get(release, 0)) + 1
        _atomic_write(self._service_dir(service) / _META, meta)

    @staticmethod
    def _log_note(record: _Record) -> str:
        line = files.last_line(Path(record.log))
        return f"log {record.log}" + (f", last line: {line}" if line else " (empty)")

    @staticmethod
    def _instance(record: _Record) -> Instance:
        return Instance(
            id=record.id,
            seq=record.seq,
            service=record.service,
            release=record.release,
            address=f"127.0.0.1:{record.port}",
            state=InstanceState.READY if record.ready_at is not None else InstanceState.STARTING,
            pid=record.pid,
            started_at=record.started_at,
            ready_at=record.ready_at,
            log=record.log,
        )
