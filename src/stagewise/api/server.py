"""The HTTP API of `stagewise server`, and the server's files in the state directory.

The server binds 127.0.0.1 by default. It writes `server.json` (its address)
and `token` (mode 0600) into the state directory; every other verb of the
CLI finds both there. Reads are open on loopback; every mutating call needs
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from stagewise.api.dashboard import install_dashboard
from stagewise.api.views import delivery_view, service_view
from stagewise.controller import Controller
from stagewise.controller.lifecycle import DataPlane, Deletion, in_words
from stagewise.errors import ConflictError, NotFoundError, SpecError, StagewiseError
from stagewise.spec import load_spec_text

DEFAULT_LISTEN = "127.0.0.1:7420"
log = logging.getLogger("stagewise.server")


class Problem(BaseModel):
    detail: str
    """What was wrong, and what would be right."""


class ApplyBody(BaseModel):
    spec: str
    """The spec's YAML text."""
    filename: str = "<request>"
    """Named in error messages."""


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
               at_exit: Callable[[list[DataPlane]], None] | None = None) -> FastAPI:
    """The API and dashboard over a controller; `at_exit` is told what data plane runs on when it stops."""
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
            if at_exit is not None:
                try:
                    at_exit(await ctl.data_planes())
                except StagewiseError as exc:
                    log.warning("cannot tell what runs on after the server: %s", exc)
            await ctl.close()

    app = FastAPI(title="stagewise", version="0.1.0", lifespan=lifespan,
                  description="Progressive delivery: full, phased, canary and blue-green, judged by statistics.")

    def ctl(request: Request) -> Controller:
        c: Controller = request.app.state.controller
        return c

    def authorised(authorization: Annotated[str | None, Header()] = None) -> None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong token; it is in the server's state "
                                "directory, file 'token'", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StagewiseError)
    async def _stagewise_error(request: Request, exc: StagewiseError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError) else 400
        if isinstance(exc, SpecError):
            body: dict[str, Any] = {"detail": str(exc), "problems": [p.__dict__ for p in exc.problems]}
        else:
            body = {"detail": str(exc)}
        return JSONResponse(status_code=status, content=body)

    @app.get("/api/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/services")
    async def services(request: Request) -> list[dict[str, Any]]:
        c = ctl(request)
        return [service_view(c, r, events=0) for r in c.store.list_services()]

    @app.get("/api/v1/services/{name}")
    async def service(name: str, request: Request) -> dict[str, Any]:
        c = ctl(request)
        record = c.store.get_service(name)
        if record is None:
            raise NotFoundError(f"no service named {name!r}")
        return service_view(c, record)

    @app.get("/api/v1/services/{name}/history")
    async def history(name: str, request: Request, limit: int = 50) -> list[dict[str, Any]]:
        c = ctl(request)
        if c.store.get_service(name) is None and not c.store.deleted_services(name):
            raise NotFoundError(f"no service named {name!r}, now or before")
        return [delivery_view(c, d) for d in c.store.deliveries(name, limit=limit)]

    @app.get("/api/v1/services/{name}/events")
    async def events(name: str, request: Request, after: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        return [e.model_dump() for e in ctl(request).store.events(name, after_id=after, limit=limit)]

    @app.post("/api/v1/apply", dependencies=[Depends(authorised)])
    async def apply(body: ApplyBody, request: Request) -> dict[str, Any]:
        spec = load_spec_text(body.spec, filename=body.filename)
        result, delivery = await ctl(request).apply(spec)
        return {"service": spec.name, "result": result, "delivery": delivery.id if delivery else None}

    for verb in ("promote", "abort", "pause", "resume", "retry"):
        _add_verb(app, verb, ctl, authorised)

    @app.post("/api/v1/services/{name}/undo", dependencies=[Depends(authorised)])
    async def undo(name: str, request: Request) -> dict[str, Any]:
        c = ctl(request)
        return delivery_view(c, await c.undo(name))

    @app.delete(
        "/api/v1/services/{name}", dependencies=[Depends(authorised)], response_model=Deletion,
        summary="Delete a service: drain and stop its router, stop its instances, forget it",
        description="The router stops taking requests and finishes the ones in flight before the instances "
                    "stop. The service's deliveries and events stay readable (history, events); applying its "
                    "name again makes a new service. The answer names the processes stopped (or left running).",
        responses={200: {"description": "Deleted: the processes stopped (or, with keep_running, left running)"},
                   400: {"model": Problem, "description": "A router or an instance could not be stopped; the "
                                                          "service is kept, and the controller restores it"},
                   401: {"model": Problem, "description": "Missing or wrong token; nothing was changed"},
                   404: {"model": Problem, "description": "No service of that name"},
                   409: {"model": Problem, "description": "A delivery is in flight: abort it first, or use force"}},
    )
    async def delete(
        name: str, request: Request,
        keep_running: Annotated[bool, Query(description="Forget the service but leave its router and "
                                                        "instances running, unmanaged")] = False,
        force: Annotated[bool, Query(description="Delete even with a delivery in flight; it ends Failed "
                                                 "where it stands")] = False,
    ) -> Deletion:
        return await ctl(request).delete(name, keep_running=keep_running, force=force)

    install_dashboard(app)
    return app


def _add_verb(app: FastAPI, verb: str, ctl: Any, authorised: Any) -> None:
    async def handler(name: str, request: Request, full: bool = False) -> dict[str, Any]:
        c: Controller = ctl(request)
        return delivery_view(c, await c.act(name, verb, full=full))

    app.post(f"/api/v1/services/{{name}}/{verb}", dependencies=[Depends(authorised)],
             name=verb, summary=f"{verb.capitalize()} the service's delivery")(handler)


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


def serve(state_dir: Path, listen: str = DEFAULT_LISTEN) -> None:
    """Run the server until SIGINT/SIGTERM: API plus the controller loop."""
    import uvicorn

    disinherit_descriptors()
    state_dir.mkdir(parents=True, exist_ok=True)
    ensure_token(state_dir)  # before server.json: a client that finds the address must find the token too
    sock = bind(listen)
    url = write_server_file(state_dir, sock)
    # Said from the app's shutdown: on SIGTERM uvicorn ends this process by the signal right after it.
    app = create_app(state_dir, at_exit=lambda planes: print(left_running(planes, state_dir), flush=True))
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
