"""The web dashboard's routes: the overview, a service's delivery page, their partials, the event stream.

Why this shape. The pages are HTML rendered here with Jinja2; htmx swaps in
fresh partials when the event stream (`live`) says something changed, and
uPlot draws the charts from JSON embedded in those partials. There is no front-end build
step and nothing is fetched from the internet: both libraries are vendored
under `static/vendor/` (see `scripts/vendor-frontend`).

What it must never do: change state. The dashboard's routes are all GETs;
every button posts to the documented API routes (`/api/v1/services/{name}/
promote` and the rest), which check the token. Page handlers are plain
functions, so Starlette runs them in its thread pool and a page for hundreds
of services never stalls the controller loop that shares the event loop.

On a server whose reads need a token (`--reads token`), the pages, partials
and the event stream need one too: the browser has no way to add a header
to a page it navigates to or to an EventSource, so the dashboard's token
dialog also keeps the token in a same-site cookie (`COOKIE`) that these GETs
accept — for reading only; every change still needs the Authorization header.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles

from stagewise import version
from stagewise.api.access import MISSING, caller_of
from stagewise.api.delivery_page import deleted_actions, delivery_page
from stagewise.api.live import event_stream
from stagewise.api.models import NAME_PATTERN, NAME_RULE, ROW_ID_MAX
from stagewise.api.overview import PHASE_ORDER, filter_rows, overview_rows, phase_counts
from stagewise.api.refusals import documented
from stagewise.api.security import SecurityHeaders
from stagewise.controller import Controller
from stagewise.errors import NotFoundError, ServiceDeletedError, TokenNeededError

HERE = Path(__file__).parent

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _clock(at: float | None) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S") if at else "–"


def _when(at: float | None) -> str:
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S") if at else "–"


def _iso(at: float | None) -> str:
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds") if at else ""


_env.filters.update(clock=_clock, when=_when, iso=_iso, slug=lambda s: str(s).lower())
_env.globals["version"] = version()


COOKIE = "stagewise_token"
"""The cookie the dashboard keeps its token in when reads need one (SameSite=Strict; reads only)."""


def render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    # Pages change with every state change; a cached copy would show a stale phase.
    return HTMLResponse(_env.get_template(template).render(**context), status_code=status_code,
                        headers={"Cache-Control": "no-store"})


def reads_of(request: Request) -> str:
    return str(getattr(request.app.state, "reads", "open"))


def may_read(request: Request) -> bool:
    """Whether this GET may be answered: reads are open, or it carries a valid token (cookie or header)."""
    if reads_of(request) != "token":
        return True
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else request.cookies.get(COOKIE, "")
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
    return bool(token) and caller_of(request, credentials) is not None


def token_needed() -> HTMLResponse:
    return render("token_needed.html", 401, reads="token")


def _controller(request: Request) -> Controller:
    c: Controller = request.app.state.controller
    return c


DeliveryId = Annotated[int | None, Query(ge=1, le=ROW_ID_MAX, description="A delivery of this service, by id")]
"""Bounded by what the store can hold, so an id past SQLite's INTEGER is refused, not an error of the store."""
StreamService = Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=63,
                                            description=f"Only this service's changes: {NAME_RULE}")]


def readable(request: Request) -> None:
    """Every dashboard route's check: a token is needed to read here and none valid came with the request."""
    if not may_read(request):
        raise TokenNeededError("a token is needed to read here")


async def read_refused(request: Request, exc: Exception) -> Response:
    """The token page for a page; a 401 for the event stream (an EventSource shows no page)."""
    if request.url.path.startswith("/api/"):
        return JSONResponse(status_code=401, content={"detail": MISSING}, headers={"WWW-Authenticate": "Bearer"})
    return token_needed()


def build_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(readable)])

    @router.get("/", include_in_schema=False)
    def overview(request: Request, phase: str = "", q: str = "") -> HTMLResponse:
        # htmx asks for the same URL it pushes into the address bar, and gets the table only;
        # a reload, or htmx restoring history, gets the whole page.
        partial = "HX-Request" in request.headers and "HX-History-Restore-Request" not in request.headers
        response = render("_overview_table.html" if partial else "overview.html", **_overview(request, phase, q))
        response.headers["Vary"] = "HX-Request"
        return response

    @router.get("/partials/overview", include_in_schema=False)
    def overview_partial(request: Request, phase: str = "", q: str = "") -> HTMLResponse:
        return render("_overview_table.html", **_overview(request, phase, q))

    @router.get("/services/{name}", include_in_schema=False)
    def delivery(name: str, request: Request, delivery: DeliveryId = None) -> HTMLResponse:
        try:
            page = delivery_page(_controller(request), name, delivery)
        except NotFoundError as exc:
            return render("not_found.html", 404, message=str(exc))
        return render("delivery.html", page=page, selected=delivery, reads=reads_of(request))

    @router.get("/partials/services/{name}", include_in_schema=False)
    def delivery_partial(name: str, request: Request, delivery: DeliveryId = None) -> HTMLResponse:
        try:
            page = delivery_page(_controller(request), name, delivery)
        except ServiceDeletedError as exc:
            # An open page of a service deleted meanwhile says so, and its buttons go off.
            return render("_deleted_live.html", message=str(exc), actions=deleted_actions(name))
        except NotFoundError as exc:
            return render("not_found.html", 404, message=str(exc))
        return render("_delivery_live.html", page=page, selected=delivery)

    @router.get("/api/v1/events/stream", operation_id="eventStream",
                summary="Server-sent events: a `change` event when the view changes",
                description="Without `service`: when a delivery starts, moves a step, pauses or ends (the "
                            "overview). With `service`: when anything its delivery page shows changes.",
                response_class=StreamingResponse,
                responses={200: {"content": {"text/event-stream": {}},
                                 "description": "An event stream; with `service`, only that service's changes"},
                           **documented([401, 422])})
    async def events_stream(request: Request, service: StreamService = None) -> StreamingResponse:
        return StreamingResponse(event_stream(request, service), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return router


def _overview(request: Request, phase: str, query: str) -> dict[str, Any]:
    started = time.perf_counter()
    rows = overview_rows(_controller(request))
    shown = filter_rows(rows, phase=phase, query=query)
    return {"rows": shown, "counts": phase_counts(rows), "phase": phase, "q": query, "phases": PHASE_ORDER,
            "reads": reads_of(request),
            "total": len(rows), "elapsed_ms": (time.perf_counter() - started) * 1000}


def install_dashboard(app: FastAPI) -> None:
    """Mount the dashboard on `app`: its pages, its static files and the security headers."""
    app.include_router(build_router())
    app.add_exception_handler(TokenNeededError, read_refused)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(SecurityHeaders)
