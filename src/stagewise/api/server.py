"""The HTTP API of `stagewise server`, and the server's files in the state directory.

The server binds 127.0.0.1 by default. It writes `server.json` (its address)
and `token` (mode 0600) into the state directory; every other verb of the
CLI finds both there. Reads are open on loopback; every mutating call needs
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from stagewise.api.dashboard import install_dashboard
from stagewise.api.refusals import install_refusals
from stagewise.api.routes import build_api_router
from stagewise.controller import Controller

DEFAULT_LISTEN = "127.0.0.1:7420"


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


def create_app(state_dir: Path, *, controller: Controller | None = None, run_loop: bool = True) -> FastAPI:
    token = ensure_token(state_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctl = controller or Controller(state_dir)
        app.state.controller = ctl
        stop = asyncio.Event()
        task = asyncio.create_task(ctl.run(stop)) if run_loop else None
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task
            await ctl.close()

    app = FastAPI(title="stagewise", version="0.1.0", lifespan=lifespan,
                  description="Progressive delivery: full, phased, canary and blue-green, judged by statistics.")

    install_refusals(app)
    app.include_router(build_api_router(token))
    install_dashboard(app)
    return app


def bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host or "127.0.0.1", int(port)))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def write_server_file(state_dir: Path, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    tmp = state_dir / "server.json.tmp"
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(tmp, state_dir / "server.json")
    return url


def serve(state_dir: Path, listen: str = DEFAULT_LISTEN) -> None:
    """Run the server until SIGINT/SIGTERM: API plus the controller loop."""
    import uvicorn

    state_dir.mkdir(parents=True, exist_ok=True)
    ensure_token(state_dir)  # before server.json: a client that finds the address must find the token too
    sock = bind(listen)
    url = write_server_file(state_dir, sock)
    app = create_app(state_dir)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    app.state.stopping = lambda: server.should_exit  # ends the dashboard's event streams on shutdown
    print(f"stagewise server on {url} (state {state_dir})", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        with contextlib.suppress(OSError):
            (state_dir / "server.json").unlink()
