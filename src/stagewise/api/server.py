"""The HTTP API of `stagewise server`, and the server's files in the state directory.

The server binds 127.0.0.1 by default. It writes `server.json` (its address)
and `token` (mode 0600) into the state directory; every other verb of the
CLI finds both there. That token is the admin token named `admin`; others
are made with `stagewise token create` (api/access.py). Reads are open on
loopback unless the server runs with `--reads token`; every mutating call
needs `Authorization: Bearer <token>` of a role that may make it, and is in
the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import FastAPI

from stagewise.api.access import AuditLog, ReadAccess, register_server_token
from stagewise.api.access_routes import build_access_router
from stagewise.api.dashboard import install_dashboard
from stagewise.api.pipeline_routes import build_pipeline_router
from stagewise.api.refusals import install_refusals
from stagewise.api.routes import build_api_router
from stagewise.controller import Controller
from stagewise.controller.lifecycle import DataPlane, in_words
from stagewise.errors import StagewiseError
from stagewise.pipelines import Pipelines

DEFAULT_LISTEN = "127.0.0.1:7420"
log = logging.getLogger("stagewise.server")


def read_token(state_dir: Path) -> str | None:
    try:
        return (state_dir / "token").read_text().strip()
    except OSError:
        return None


def ensure_token(state_dir: Path) -> str:
    token = read_token(state_dir)
    if token:
        return token
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(state_dir / "token", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def create_app(state_dir: Path, *, controller: Controller | None = None, run_loop: bool = True,
               at_exit: Callable[[list[DataPlane]], None] | None = None, reads: ReadAccess = "open",
               windows_file: Path | None = None) -> FastAPI:
    """The API and dashboard over a controller; `at_exit` is told what data plane runs on when it stops.

    `reads`: "open" (anyone who reaches the address reads) or "token" (at least a viewer token);
    `windows_file`: the freeze windows every service shares.
    """
    token = ensure_token(state_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctl = controller or Controller(state_dir, windows_file=windows_file)
        register_server_token(ctl, token)
        app.state.controller = ctl
        app.state.pipelines = pipelines = Pipelines(ctl)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(ctl.run(stop)), asyncio.create_task(pipelines.run(stop))] if run_loop else []
        try:
            yield
        finally:
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

    app = FastAPI(title="stagewise", version="0.1.0", lifespan=lifespan,
                  description="Progressive delivery: full, phased, canary and blue-green, judged by statistics.")

    install_refusals(app)
    app.include_router(build_api_router(reads))
    app.include_router(build_access_router())
    app.include_router(build_pipeline_router(reads))
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
    host, _, port = listen.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host or "127.0.0.1", int(port)))
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
    for name in os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if os.get_inheritable(fd):
                os.set_inheritable(fd, False)
                changed.append(fd)
        except OSError:
            continue  # the directory listing's own descriptor, closed by now
    return changed


def write_server_file(state_dir: Path, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    tmp = state_dir / "server.json.tmp"
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(tmp, state_dir / "server.json")
    return url


def serve(state_dir: Path, listen: str = DEFAULT_LISTEN, *, reads: ReadAccess = "open",
          windows_file: Path | None = None) -> None:
    """Run the server until SIGINT/SIGTERM: API plus the controller loop."""
    import uvicorn

    disinherit_descriptors()
    state_dir.mkdir(parents=True, exist_ok=True)
    ensure_token(state_dir)  # before server.json: a client that finds the address must find the token too
    sock = bind(listen)
    url = write_server_file(state_dir, sock)
    # Said from the app's shutdown: on SIGTERM uvicorn ends this process by the signal right after it.
    app = create_app(state_dir, at_exit=lambda planes: print(left_running(planes, state_dir), flush=True),
                     reads=reads, windows_file=windows_file)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    app.state.stopping = lambda: server.should_exit  # ends the dashboard's event streams on shutdown
    print(f"stagewise server on {url} (state {state_dir})", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        with contextlib.suppress(OSError):
            (state_dir / "server.json").unlink()


def left_running(planes: list[DataPlane], state_dir: Path) -> str:
    """The server's last words: the data plane it leaves running, by design, and how to stop it."""
    if not planes:
        return "stagewise server stopped; no router or instance of any service runs."
    lines = [f"stagewise server stopped; the data plane runs on by design (a server on {state_dir} takes it "
             "up again):"]
    lines += [f"  {p.service}: {in_words(p)}" for p in planes]
    lines.append("stop a service's router and instances with a server running: stagewise delete SERVICE")
    return "\n".join(lines)
