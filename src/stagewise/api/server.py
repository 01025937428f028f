"""The HTTP API of `stagewise server`, and the server's files in the state directory.

The server binds 127.0.0.1 by default. It writes `server.json` (its address)
and `token` (mode 0600) into the state directory; every other verb of the
CLI finds both there. That token is the admin token named `admin`; others
are made with `stagewise token create` (api/access.py). Reads are open on
loopback unless the server runs with `--reads token`; every mutating call
needs `Authorization: Bearer <token>` of a role that may make it, and is in
the audit log.

Its settings (api/settings.py) come from the command line, the environment
and a settings file; on SIGHUP it reads the file again and applies what may
change while it runs (the log's level and format, the reconcile interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import FrameType

from fastapi import FastAPI

from stagewise import version
from stagewise.api.access import AuditLog, ReadAccess, register_server_token
from stagewise.api.access_routes import build_access_router
from stagewise.api.dashboard import install_dashboard
from stagewise.api.logs import EventLog, announce, configure_logging
from stagewise.api.metrics import ControllerMetrics, install_metrics
from stagewise.api.pipeline_routes import build_pipeline_router
from stagewise.api.refusals import install_refusals
from stagewise.api.routes import build_api_router
from stagewise.api.settings import DEFAULT_LISTEN, ServerSettings
from stagewise.basics import files, proc
from stagewise.basics.ports import split_host_port
from stagewise.controller import Controller
from stagewise.controller.controller import RESYNC, TICK
from stagewise.controller.leases import LeaseSettings
from stagewise.controller.lifecycle import DataPlane, in_words
from stagewise.controller.observer import Observers
from stagewise.errors import SettingsError, StagewiseError
from stagewise.pipelines import Pipelines
from stagewise.store.locations import parse_location

__all__ = ["DEFAULT_LISTEN", "bind", "create_app", "ensure_token", "read_token", "serve"]
log = logging.getLogger("stagewise.server")


def read_token(state_dir: Path) -> str | None:
    try:
        return (state_dir / "token").read_text().strip()
    except OSError:
        return None


def ensure_token(state_dir: Path) -> str:
    """The admin token of the servers of `state_dir`, made (mode 0600) if there is none.

    Servers sharing the directory and started together agree on one: the first to make the file wins, and
    the others read it.
    """
    token = read_token(state_dir)
    if token:
        return token
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    if files.write_new(state_dir / "token", token + "\n", mode=0o600):
        return token
    made = read_token(state_dir)
    if made:
        return made
    files.write_atomic(state_dir / "token", token + "\n", mode=0o600)  # an empty file is no token: replaced
    return token


def create_app(state_dir: Path, *, controller: Controller | None = None, run_loop: bool = True,
               at_exit: Callable[[list[DataPlane]], None] | None = None, tick: float = TICK,
               hangup: Callable[[], None] | None = None, reads: ReadAccess = "open",
               windows_file: Path | None = None, store: str = "sqlite", name: str | None = None,
               leases: LeaseSettings | None = None, resync: float = RESYNC) -> FastAPI:
    """The API, dashboard and metrics over a controller (a new one passes every `tick` seconds, and reconciles
    a service with nothing in flight every `resync` seconds).

    `at_exit` is told what data plane runs on when the app stops; `hangup` is called on SIGHUP while it runs.
    `reads`: "open" (anyone who reaches the address reads) or "token" (at least a viewer token);
    `windows_file`: the freeze windows every service shares; `store`: where the state is kept (`--store`);
    `name` and `leases`: this server's name and its lease settings among the servers of one store.
    """
    token = ensure_token(state_dir)
    metrics = ControllerMetrics(lambda: getattr(app.state, "controller", None))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctl = controller or Controller(state_dir, tick=tick, resync=resync, windows_file=windows_file, store=store,
                                       name=name, leases=leases)
        ctl.observer = Observers(ctl.observer, metrics.events, EventLog())
        register_server_token(ctl, token)
        app.state.controller = ctl
        app.state.pipelines = pipelines = Pipelines(ctl)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(ctl.run(stop)), asyncio.create_task(pipelines.run(stop))] if run_loop else []
        if hangup is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hangup)
        try:
            yield
        finally:
            if hangup is not None:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            stop.set()
            for task in tasks:
                await task
            await pipelines.close()
            if at_exit is not None:
                try:
                    at_exit(await ctl.data_planes())
                except StagewiseError as exc:
                    log.warning("cannot tell what runs on after the server: %s", exc)
            await ctl.close()

    app = FastAPI(title="stagewise", version=version(), lifespan=lifespan,
                  description="Progressive delivery: full, phased, canary and blue-green, judged by statistics.")

    app.state.metrics = metrics
    install_refusals(app)
    app.include_router(build_api_router(reads))
    app.include_router(build_access_router())
    app.include_router(build_pipeline_router(reads))
    install_metrics(app, metrics, reads)
    install_dashboard(app)
    app.add_middleware(AuditLog)
    app.state.reads = reads
    return app


def bind(listen: str) -> socket.socket:
    """The server's listening socket, close-on-exec like every socket Python makes.

    Never inheritable: the server starts processes that outlive it (routers, instances), and a
    copy of this socket in one of them keeps the port taken after the server exits, so the
    server could not start again. uvicorn serves it in this process (`sockets=`); only its
    multi-process mode, which stagewise does not use, hands a socket to children.
    """
    try:
        host, port = split_host_port(listen, zero_ok=True)
    except ValueError as exc:  # said as the bind's own failure: the command line reports it, no traceback
        raise OSError(errno.EINVAL, f"{exc}; expected host:port, such as {DEFAULT_LISTEN}") from exc
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host or "127.0.0.1", port))
    sock.listen(128)
    return sock


def disinherit_descriptors() -> list[int]:
    """Make every descriptor above stderr close-on-exec; the ones that were inheritable.

    Whatever this process inherited from whoever started it (a supervisor's socket, a
    shell's pipe) is not for the data plane. Not every way the drivers start a process
    closes descriptors in the child (posix_spawn does not, nor do uvloop's subprocesses),
    and a daemon that holds a copy keeps it for as long as it runs: so the server, which is
    the parent of them all, keeps nothing inheritable.
    """
    changed = []
    for fd in proc.inheritable_descriptors():
        with contextlib.suppress(OSError):  # closed meanwhile
            os.set_inheritable(fd, False)
            changed.append(fd)
    return changed


def write_server_file(state_dir: Path, sock: socket.socket) -> str:
    """`server.json` (the address the CLI uses) and `servers/PID.json`, each with this process's pid and start time
    (so a stale file can be told): several servers may share one state directory (each on its own port, one
    PostgreSQL store), and the CLI finds a live one whichever died."""
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    text = json.dumps({"url": url, "pid": os.getpid(), "start_time": proc.start_time(os.getpid())})
    (state_dir / "servers").mkdir(exist_ok=True)
    files.write_atomic(state_dir / "servers" / f"{os.getpid()}.json", text)
    files.write_atomic(state_dir / "server.json", text)
    return url


def remove_server_file(state_dir: Path) -> None:
    """This server's address files go; `server.json` then names another live server of the directory, if any."""
    with contextlib.suppress(OSError):
        (state_dir / "servers" / f"{os.getpid()}.json").unlink()
    try:
        ours = json.loads((state_dir / "server.json").read_text()).get("pid") == os.getpid()
    except (OSError, ValueError, AttributeError):
        ours = True
    if not ours:
        return
    with contextlib.suppress(OSError):
        for other in sorted((state_dir / "servers").glob("*.json")):
            if other.stem.isdigit() and proc.running(int(other.stem)):
                files.write_atomic(state_dir / "server.json", other.read_text())
                return
        (state_dir / "server.json").unlink()


def serve(state_dir: Path, settings: ServerSettings | None = None, *,
          reread: Callable[[], ServerSettings] | None = None, reads: ReadAccess = "open",
          windows_file: Path | None = None, store: str = "sqlite", name: str | None = None,
          leases: LeaseSettings | None = None) -> None:
    """Run the server until SIGINT/SIGTERM: API plus the controller loop; `reread` gives the settings on SIGHUP.

    `reads`, `windows_file`, `store`, `name` and `leases` as for `create_app`.
    """
    import uvicorn

    settings = settings or ServerSettings()
    configure_logging(settings.log_level, settings.log_format)
    disinherit_descriptors()
    state_dir.mkdir(parents=True, exist_ok=True)
    ensure_token(state_dir)  # before server.json: a client that finds the address must find the token too
    sock = bind(settings.listen)
    url = write_server_file(state_dir, sock)
    in_force = [settings]

    def hangup() -> None:
        if reread is not None:
            in_force[0] = reload_settings(app, in_force[0], reread)

    # Until the app runs (and takes SIGHUP over), a reload that comes early must not end the server, as
    # SIGHUP's default would. A handler, not SIG_IGN: an ignored signal stays ignored in the programs started.
    signal.signal(signal.SIGHUP, lambda signum, frame: log.info("SIGHUP before the server runs: nothing to re-read"))
    # Said from the app's shutdown: on SIGTERM uvicorn ends this process by the signal right after it.
    app = create_app(state_dir, tick=settings.tick, resync=settings.resync, hangup=hangup, reads=reads,
                     windows_file=windows_file, store=store, name=name, leases=leases,
                     at_exit=lambda planes: announce(log, left_running(planes, state_dir), state=str(state_dir)))
    # uvicorn leaves the logging alone (log_config=None): configure_logging set it up, in the format asked for.
    config = uvicorn.Config(app, log_config=None, log_level=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    app.state.stopping = lambda: server.should_exit  # ends the dashboard's event streams on shutdown
    kept = "" if store == "sqlite" else f", store {parse_location(store, state_dir=state_dir)}"  # password masked
    announce(log, f"stagewise server on {url} (state {state_dir}{kept})", url=url, state=str(state_dir),
             pid=os.getpid())
    log.debug("settings: %s", settings.in_words())
    with _unwound_by_sigterm():
        try:
            server.run(sockets=[sock])
        finally:
            remove_server_file(state_dir)


@contextlib.contextmanager
def _unwound_by_sigterm() -> Iterator[None]:
    """Let a SIGTERM unwind the stack, so that `finally` clauses run, and still end the process by it.

    uvicorn takes SIGTERM for a graceful shutdown, then puts back the handler it found and raises the
    signal again. With Python's default handler the process would die right there, and the `finally`
    that removes server.json would never run: the next CLI call would go to a dead address. The handler
    it finds is this one: it raises SystemExit, and once the stack is unwound the process ends by
    SIGTERM as before (a supervisor such as systemd counts that as a clean stop; exit status 143 it would not).
    """
    terminated = False

    def unwind(signum: int, frame: FrameType | None) -> None:
        nonlocal terminated
        terminated = True
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    except SystemExit:
        if not terminated:
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)


def reload_settings(app: FastAPI, current: ServerSettings, reread: Callable[[], ServerSettings]) -> ServerSettings:
    """SIGHUP: read the settings again and apply those that can change while the server runs; the new ones.

    A settings file that is not right changes nothing: the error is logged and the settings in force stay.
    """
    try:
        new = reread()
    except SettingsError as exc:
        log.error("SIGHUP: the settings in force stay; the settings file is not right:\n%s", exc)
        return current
    configure_logging(new.log_level, new.log_format)
    controller: Controller | None = getattr(app.state, "controller", None)
    if controller is not None:
        controller.tick_seconds = new.tick
        controller.resync_seconds = new.resync
    changes = new.changed(current)
    if "listen" in changes:
        log.warning("SIGHUP: listen changed to %s; the server listens on %s until it restarts", new.listen,
                    current.listen, extra={"setting": "listen"})
        new = dataclasses.replace(new, listen=current.listen)
        changes.pop("listen")
    said = ", ".join(f"{key} {old} → {value}" for key, (value, old) in changes.items()) or "nothing changed"
    log.info("SIGHUP: settings read again: %s", said, extra={"changed": sorted(changes)})
    return new


def left_running(planes: list[DataPlane], state_dir: Path) -> str:
    """The server's last words: the data plane it leaves running, by design, and how to stop it."""
    if not planes:
        return "stagewise server stopped; no router or instance of any service runs."
    lines = [f"stagewise server stopped; the data plane runs on by design (a server on {state_dir} takes it "
             "up again):"]
    lines += [f"  {p.service}: {in_words(p)}" for p in planes]
    lines.append("stop a service's router and instances with a server running: stagewise delete SERVICE")
    return "\n".join(lines)
