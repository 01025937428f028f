"""Who may call what: API tokens with a name and a role, and the audit log of every mutating call.

Roles, each allowed what the one before it is:

    viewer    read (when the server requires a token for reads at all: `--reads token`)
    operator  promote, pause, resume, approve
    admin     apply, abort, undo, retry, delete, release, tokens, audit

Tokens are random 256-bit strings, shown once when made (`stagewise token
create NAME --role R`) and stored as their SHA-256 only: a random token
needs no slow hash, and a copy of the state database gives nobody a token.
The server's own token — the file `token` in its state directory, which the
CLI on the same machine reads — is the token named `admin`, with the admin
role; it is registered (by its hash) whenever the server starts, so
rotating it is: delete the file, restart.

Reads. They stay open on loopback by default, as before: the dashboard's
pages are plain GETs a browser makes without a token, and scripts that
read `/api/v1/services` keep working. A server started with `--reads token`
requires at least a viewer token for every read of the API; the dashboard
then sends the token it asked for (see dashboard.js), its pages being
HTML over the same reads. That is what makes a viewer token mean anything.

The audit log: every POST and DELETE under `/api/` — allowed or refused —
with the caller's token name and role, the path and the answer's status
(`GET /api/v1/audit`, admin). A plain ASGI middleware, so the status is the
one really sent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stagewise.controller import Controller
from stagewise.errors import StagewiseError
from stagewise.store import AuditEntry, Role, TokenRecord

log = logging.getLogger("stagewise.server")

ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
SERVER_TOKEN_NAME = "admin"
"""The name of the server's own token (the state directory's `token` file)."""
ReadAccess = Literal["open", "token"]

BEARER = HTTPBearer(scheme_name="token", auto_error=False,
                    description="An API token: the server's own (file `token` in its state directory, role admin) "
                                "or one made with `stagewise token create NAME --role viewer|operator|admin`.")
"""Reads `Authorization: Bearer ...`; the checks below refuse a missing or wrong one with a 401 of ours."""
MISSING = ("missing or wrong token; the server's own is in its state directory, file 'token' "
           "(others: stagewise token create)")


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role


ANONYMOUS = Caller(name="-", role="viewer")
"""A reader without a token, where reads are open."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def at_least(role: Role, needed: Role) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def register_server_token(controller: Controller, token: str) -> None:
    """Make the server's own token (file `token`) the admin token named `admin`.

    Servers on several machines sharing one PostgreSQL store each have their own state directory and token:
    the first is `admin`, each other one `admin-` and the start of its hash, so none replaces another's."""
    store = controller.store
    known = store.token_by_hash(digest(token))
    if known is not None and known.name.startswith(SERVER_TOKEN_NAME) and known.role == "admin":
        return
    name = SERVER_TOKEN_NAME
    if controller.leases is not None and any(t.name == name for t in store.list_tokens()):
        name = f"{SERVER_TOKEN_NAME}-{digest(token)[:8]}"
    store.put_token(TokenRecord(name=name, role="admin", hash=digest(token), created_at=time.time(),
                                created_by="server"))


def _controller(request: Request) -> Controller:
    c: Controller = request.app.state.controller
    return c


def caller_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller | None:
    """The caller a bearer token names; None when it names none."""
    given = credentials.credentials if credentials is not None else ""
    if not given:
        return None
    record = _controller(request).store.token_by_hash(digest(given))
    if record is None or not hmac.compare_digest(record.hash, digest(given)):
        return None
    return Caller(name=record.name, role=record.role)


def require(needed: Role, what: str) -> Any:
    """A dependency: the caller's token must have `needed` (or a larger) role; `what` names the action."""

    def check(request: Request,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> Caller:
        caller = caller_of(request, credentials)
        if caller is None:
            raise HTTPException(status_code=401, detail=MISSING, headers={"WWW-Authenticate": "Bearer"})
        request.state.caller = caller
        if not at_least(caller.role, needed):
            raise HTTPException(status_code=403, detail=f"the token {caller.name!r} (role {caller.role}) may not "
                                f"{what}: that needs the {needed} role or above")
        return caller

    return Depends(check)


def reader(mode: ReadAccess) -> Any:
    """A dependency for reads: open (anyone on the server's address), or at least a viewer token."""
    if mode == "open":
        def anyone(request: Request) -> Caller:
            return ANONYMOUS

        return Depends(anyone)
    return require("viewer", "read")


class AuditLog:
    """ASGI middleware: one audit entry per POST, PUT, PATCH or DELETE under /api/, after its answer."""

    WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in self.WRITES or \
                not str(scope.get("path", "")).startswith("/api/"):
            await self.app(scope, receive, send)
            return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._record(scope, status)

    def _record(self, scope: Scope, status: int) -> None:
        caller = scope.get("state", {}).get("caller")
        query = scope.get("query_string", b"").decode("latin-1")
        path = str(scope.get("path", "")) + (f"?{query}" if query else "")
        app = scope.get("app")
        controller = getattr(getattr(app, "state", None), "controller", None)
        if controller is None:
            return
        entry = AuditEntry(at=time.time(), actor=caller.name if caller else "-", role=caller.role if caller else "-",
                           method=str(scope["method"]), path=path, status=status)
        try:
            controller.store.record_audit(entry)
        except StagewiseError as exc:  # the store's own trouble, answered as such already (503)
            log.error("audit entry not kept (%s %s by %s → %d): %s", entry.method, entry.path, entry.actor,
                      entry.status, exc)
