"""How the API says no: one JSON error body per refusal, and the statuses each route documents.

Why one place. A client (the CLI, the dashboard's buttons, a user's script)
must be able to rely on two things: every refusal is JSON with a `detail`
sentence saying what was wrong and what would be right, and a route answers
only the statuses `/openapi.json` lists for it. The exception handlers here
turn the `StagewiseError` tree and FastAPI's request validation into those
bodies, and `documented` gives each route the matching `responses=` entries,
so the two are written side by side.

What it must never do: answer a 5xx for bad input, or leak a traceback. A
parameter outside its bounds is a 422 naming the parameter; a bad spec is a
400 with each problem's file:line:column; only the server's own trouble
(its state store busy or failing) is a 503.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from stagewise.api.models import NAME_RULE, BadSpecBody, ErrorBody, InvalidRequestBody
from stagewise.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    SpecError,
    StagewiseError,
    TemporaryError,
    UnknownDriverError,
)

NAMED_PARAMETERS = {("path", "name"), ("query", "service")}
"""Parameters that hold a service name: a pattern or length mismatch is explained in words."""
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
"""The methods a 405's `Allow` is drawn from."""
BODY_NOT_JSON = "There was an error parsing the body"
"""What FastAPI raises (as a 400) for a request body that is not the JSON its content type says."""
ECHO_LIMIT = 60
"""Characters of a refused value repeated in the error; a huge value is cut."""

_STANDARD: dict[int, tuple[type[BaseModel], str]] = {
    400: (BadSpecBody, "The spec is invalid; `problems` lists each problem with file:line:column"),
    401: (ErrorBody, "The token is missing or wrong (it is in the server's state directory, file `token`)"),
    403: (ErrorBody, "The token's role may not do this (viewer < operator < admin), or its name is not among a "
                     "gate's approvers"),
    404: (ErrorBody, "No service by that name"),
    409: (ErrorBody, "The request does not fit the service's delivery now; `detail` says why and what to do"),
    422: (InvalidRequestBody, "A parameter or the body is outside what this route takes; `errors` names each"),
    503: (ErrorBody, "The server's state store is busy or failing; retry after `Retry-After` seconds if given"),
}


def documented(statuses: Sequence[int], descriptions: Mapping[int, str] | None = None,
               ) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that may refuse with `statuses`; `descriptions` say what some mean on this route."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model, description = _STANDARD[status]
        entry: dict[str, Any] = {"model": model, "description": (descriptions or {}).get(status, description)}
        if status == 503:
            entry["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying, when a retry can help",
                                                "schema": {"type": "integer"}}}
        out[status] = entry
    return out


def refusal_status(exc: StagewiseError) -> int:
    """The HTTP status for an error the controller raised on purpose."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ForbiddenError):
        return 403
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, SpecError | UnknownDriverError):
        return 400
    # Anything else is the server's own trouble (its store busy, full or corrupt), never the request's.
    return 503


async def stagewise_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StagewiseError)
    status = refusal_status(exc)
    body: dict[str, Any] = {"detail": str(exc)}
    if status == 400:
        body["problems"] = [p.__dict__ for p in exc.problems] if isinstance(exc, SpecError) else []
    headers = {"Retry-After": str(max(1, round(exc.delay)))} if isinstance(exc, TemporaryError) else None
    return JSONResponse(status_code=status, content=body, headers=headers)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_invalid_input(error) for error in exc.errors()]
    detail = "; ".join(f"{e['where']}: {e['message']}" for e in errors) or "the request does not fit this route"
    return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})


def _invalid_input(error: dict[str, Any]) -> dict[str, str]:
    location = tuple(str(part) for part in error.get("loc", ()))
    where = ".".join(location) or "request"
    message = str(error.get("msg", "invalid"))
    if location[:2] in NAMED_PARAMETERS and str(error.get("type")).startswith(("string_pattern", "string_too")):
        message = NAME_RULE
    value = error.get("input")
    if error.get("type") != "missing" and isinstance(value, str | int | float | bool):
        shown = repr(value)
        message += f", got {shown if len(shown) <= ECHO_LIMIT else shown[:ECHO_LIMIT] + '…'}"
    return {"where": where, "message": message}


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals as JSON; a 405 lists every method of the path, not only the first route's.

    Starlette answers a method a path does not take from the first route whose path matches, so a
    path served by two routes (GET and DELETE of a service) would claim to allow only one of them.
    """
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == BODY_NOT_JSON:
        # FastAPI's own answer to a body it cannot parse: a body outside what the route takes, like any other
        return JSONResponse(status_code=422, content={"detail": "body: not valid JSON",
                                                      "errors": [{"where": "body", "message": "not valid JSON"}]})
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = [method for method in METHODS
                   if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                          for route in request.app.router.routes)]
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=headers or None)


def install_refusals(app: FastAPI) -> None:
    """Answer every `StagewiseError`, every invalid request and every HTTP refusal with a JSON error body."""
    app.add_exception_handler(StagewiseError, stagewise_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
