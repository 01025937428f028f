"""The routes of people and tokens: who am I, make and drop tokens, read the audit log.

A new token is shown once, in the answer that makes it; the store keeps its
hash only (api/access.py). Tokens and the audit log are the admin's; `whoami`
answers any valid token, so the dashboard can hide the buttons a token's role
cannot use.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from stagewise.api.access import SERVER_TOKEN_NAME, Caller, digest, new_token, require
from stagewise.api.models import NAME_PATTERN, PAGE_MAX, ROW_ID_MAX, AuditView, NewToken, TokenBody, TokenView, WhoAmI
from stagewise.api.refusals import documented
from stagewise.controller import Controller
from stagewise.errors import ConflictError
from stagewise.store import TokenRecord

TokenName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, examples=["alice"],
                                description="A token's name: lower-case letters, digits and '-', at most 63.")]


def _controller(request: Request) -> Controller:
    c: Controller = request.app.state.controller
    return c


def build_access_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/whoami", operation_id="whoami", response_model=WhoAmI,
                summary="The name and role of the token sent (any role)",
                responses={200: {"description": "The token's name and role"}, **documented([401, 503])})
    async def whoami(caller: Annotated[Caller, require("viewer", "ask who it is")]) -> dict[str, Any]:
        return {"name": caller.name, "role": caller.role}

    @router.get("/tokens", operation_id="listTokens", response_model=list[TokenView],
                summary="Every token's name and role, never the token (admin)",
                responses={200: {"description": "The tokens by name"}, **documented([401, 403, 503])})
    async def tokens(request: Request, _: Annotated[Caller, require("admin", "list tokens")]) -> list[dict[str, Any]]:
        return [t.model_dump(exclude={"hash"}) for t in _controller(request).store.list_tokens()]

    @router.post("/tokens", operation_id="createToken", response_model=NewToken,
                 summary="Make a token with a name and a role; the answer is the only place it is shown (admin)",
                 responses={200: {"description": "The new token"},
                            **documented([401, 403, 409, 422, 503], {409: "A token with that name exists"})})
    async def create(body: TokenBody, request: Request,
                     caller: Annotated[Caller, require("admin", "make tokens")]) -> dict[str, Any]:
        token = new_token()
        record = TokenRecord(name=body.name, role=body.role, hash=digest(token), created_at=time.time(),
                             created_by=caller.name)
        if body.name == SERVER_TOKEN_NAME:
            raise ConflictError(f"{SERVER_TOKEN_NAME!r} is the server's own token (file 'token'); choose another name")
        _controller(request).store.add_token(record)
        return {"name": record.name, "role": record.role, "token": token}

    @router.delete("/tokens/{name}", operation_id="deleteToken", response_model=TokenView,
                   summary="Drop a token: it stops working at once (admin)",
                   responses={200: {"description": "The token dropped"},
                              **documented([401, 403, 404, 409, 422, 503], {
                                  404: "No token by that name",
                                  409: "The server's own token is rotated by deleting its file and restarting"})})
    async def delete(name: TokenName, request: Request,
                     _: Annotated[Caller, require("admin", "drop tokens")]) -> dict[str, Any]:
        if name == SERVER_TOKEN_NAME:
            raise ConflictError("the server's own token is rotated by deleting the state directory's file 'token' "
                                "and restarting the server")
        store = _controller(request).store
        found = [t for t in store.list_tokens() if t.name == name]
        store.delete_token(name)
        return found[0].model_dump(exclude={"hash"})

    @router.get("/audit", operation_id="audit", response_model=list[AuditView],
                summary="Every mutating call, allowed or refused, with the caller's token name (admin)",
                responses={200: {"description": "The audit log, oldest first"},
                           **documented([401, 403, 422, 503])})
    async def audit(request: Request, _: Annotated[Caller, require("admin", "read the audit log")],
                    after: Annotated[int, Query(ge=0, le=ROW_ID_MAX, description="Only entries after this id")] = 0,
                    limit: Annotated[int, Query(ge=1, le=PAGE_MAX, description="At most this many")] = 200,
                    ) -> list[dict[str, Any]]:
        return [e.model_dump() for e in _controller(request).store.audit(after_id=after, limit=limit)]

    return router
