"""The routes of the HTTP API (`/api/v1/...`), each with its bounds, its response model and its statuses.

Why here and so explicit. The CLI, the dashboard's buttons and users' scripts
all call these routes, and `/openapi.json` is their contract: each parameter
carries the bounds the store and the spec can honour (a `limit` SQLite can
bind, a name the spec would accept), each route names its response model and
every status it may answer. A request outside the bounds is refused before it
reaches the controller.

What it must never do: decide anything. A route reads the store or calls one
controller verb, and renders through `views`; state changes belong to the
controller, which takes its per-service lock for each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from stagewise.api.access import Caller, ReadAccess, reader, require
from stagewise.api.models import (
    NAME_PATTERN,
    NAME_RULE,
    PAGE_MAX,
    ROW_ID_MAX,
    ApplyBody,
    ApplyResult,
    DeliveryView,
    EventView,
    Health,
    ServiceView,
)
from stagewise.api.refusals import documented
from stagewise.api.views import delivery_view, service_view
from stagewise.controller import Controller
from stagewise.controller.lifecycle import Deletion
from stagewise.core.pipeline import PipelineSpec
from stagewise.errors import NotFoundError
from stagewise.spec import load_document_text
from stagewise.store import Role

ServiceName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, examples=["checkout"],
                                  description=f"The service's `metadata.name`: {NAME_RULE}.")]
SERVICE_ROUTES = ("getService", "serviceHistory", "serviceEvents", "promote", "abort", "pause", "resume", "retry",
                  "undo", "approve", "deleteService")
"""Operations that take a service's name: an answer that names a service links to each of them."""
Comment = Annotated[str, Query(max_length=1000, description="Kept with the approval in the event log")]
Reject = Annotated[bool, Query(description="Say no instead: the delivery rolls back")]
PLAIN_VERBS: dict[str, tuple[str, Role]] = {
    "abort": ("Roll the delivery back to the stable release (admin)", "admin"),
    "pause": ("Hold the delivery where it is (operator)", "operator"),
    "resume": ("Let a paused delivery go on (operator)", "operator"),
    "retry": ("Start a rolled-back delivery again (admin)", "admin"),
}
"""The controller's verbs that take only a name, and the role each needs (promote also takes `full`; undo starts
a delivery)."""
VERB_404 = "No service by that name, or it never had a delivery"


def service_links(pointer: str) -> dict[str, Any]:
    """OpenAPI links from an answer naming a service (at JSON pointer `pointer`) to the routes taking its name."""
    return {operation: {"operationId": operation, "parameters": {"name": f"$response.body#{pointer}"}}
            for operation in SERVICE_ROUTES}


def ok(description: str, pointer: str | None = "/service") -> dict[int | str, dict[str, Any]]:
    """The 200 answer's entry; with `pointer`, links from the service it names to the routes taking a name."""
    entry: dict[str, Any] = {"description": description}
    if pointer is not None:
        entry["links"] = service_links(pointer)
    return {200: entry}


def _controller(request: Request) -> Controller:
    c: Controller = request.app.state.controller
    return c


def _known(controller: Controller, name: str) -> None:
    """Refuse a name that was never a service; a deleted service's history and events stay readable."""
    if controller.store.get_service(name) is None and not controller.store.deleted_services(name):
        raise NotFoundError(f"no service named {name!r}, now or before")


def _verb_route(verb: str) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The handler of a verb that takes nothing but the service's name."""

    async def handler(name: ServiceName, request: Request) -> dict[str, Any]:
        c = _controller(request)
        return delivery_view(c, await c.act(name, verb, actor=_who(request)))

    return handler


def _who(request: Request) -> str:
    caller: Caller | None = getattr(request.state, "caller", None)
    return caller.name if caller is not None else ""


async def _apply(body: ApplyBody, request: Request) -> dict[str, Any]:
    """A Service spec to the controller, a Pipeline spec to the pipelines."""
    spec = load_document_text(body.spec, filename=body.filename)
    if isinstance(spec, PipelineSpec):
        result = await request.app.state.pipelines.apply(spec, actor=_who(request), filename=body.filename)
        return {"service": spec.name, "kind": "Pipeline", "result": result, "delivery": None}
    result, delivery = await _controller(request).apply(spec, actor=_who(request),
                                                        override_freeze=body.override_freeze)
    return {"service": spec.name, "result": result, "delivery": delivery.id if delivery else None}


def build_api_router(reads: ReadAccess = "open") -> APIRouter:
    """The `/api/v1` routes; each mutating one needs a token of the role it names, reads as `reads` says."""
    router = APIRouter(prefix="/api/v1")
    readers = APIRouter(dependencies=[reader(reads)])
    mutating = APIRouter()
    _add_reads(router, readers)
    _add_apply_and_verbs(mutating)
    _add_delete(mutating)
    router.include_router(readers)
    router.include_router(mutating)
    return router


def _add_reads(router: APIRouter, readers: APIRouter) -> None:
    """The routes that read: health open to anyone, the others behind the read check of `readers`."""

    @router.get("/health", operation_id="health", summary="Whether the server answers")
    async def health() -> Health:
        return Health(status="ok")

    @readers.get("/services", operation_id="listServices", response_model=list[ServiceView],
                summary="Every service with its latest delivery",
                responses={**ok("The services, by name; `events` is empty here", pointer="/0/service"),
                           **documented([503])})
    async def services(request: Request) -> list[dict[str, Any]]:
        c = _controller(request)
        return [service_view(c, r, events=0) for r in c.store.list_services()]

    @readers.get("/services/{name}", operation_id="getService", response_model=ServiceView,
                summary="A service, its latest delivery and its newest events",
                responses={**ok("The service"), **documented([404, 422, 503])})
    async def service(name: ServiceName, request: Request) -> dict[str, Any]:
        c = _controller(request)
        record = c.store.get_service(name)
        if record is None:
            raise NotFoundError(f"no service named {name!r}")
        return service_view(c, record)

    @readers.get("/services/{name}/history", operation_id="serviceHistory", response_model=list[DeliveryView],
                summary="The service's deliveries, newest first",
                responses={**ok("The deliveries", pointer=None), **documented([404, 422, 503])})
    async def history(name: ServiceName, request: Request,
                      limit: Annotated[int, Query(ge=1, le=PAGE_MAX, description="At most this many deliveries")]
                      = 50) -> list[dict[str, Any]]:
        c = _controller(request)
        _known(c, name)
        return [delivery_view(c, d) for d in c.store.deliveries(name, limit=limit)]

    @readers.get("/services/{name}/events", operation_id="serviceEvents", response_model=list[EventView],
                summary="The service's event log, oldest first, from after an event id",
                responses={**ok("The events", pointer=None), **documented([404, 422, 503])})
    async def events(name: ServiceName, request: Request,
                     after: Annotated[int, Query(ge=0, le=ROW_ID_MAX,
                                                 description="Only events with a larger id (the last id seen)")] = 0,
                     limit: Annotated[int, Query(ge=1, le=PAGE_MAX, description="At most this many events")] = 200,
                     ) -> list[dict[str, Any]]:
        c = _controller(request)
        _known(c, name)
        return [e.model_dump() for e in c.store.events(name, after_id=after, limit=limit)]


def _add_apply_and_verbs(mutating: APIRouter) -> None:
    """apply, and the verbs of a delivery: promote, abort, pause, resume, retry, approve, undo."""

    @mutating.post("/apply", operation_id="apply", response_model=ApplyResult,
                   summary="Store a spec (a Service or a Pipeline); a new release starts a delivery (admin)",
                   dependencies=[require("admin", "apply")],
                   responses={**ok("What the apply did"),
                              **documented([400, 401, 403, 409, 422, 503],
                                           {409: "A delivery of another release is in flight; promote or abort it"})})
    async def apply(body: ApplyBody, request: Request) -> dict[str, Any]:
        return await _apply(body, request)

    def verb_responses(role: Role) -> dict[int | str, dict[str, Any]]:
        return {**ok("The delivery after the verb"),
                **documented([401, 403, 404, 409, 422, 503], {404: VERB_404, 403: f"The token's role is below {role}"})}

    @mutating.post("/services/{name}/promote", operation_id="promote", response_model=DeliveryView,
                   summary="Go past the current pause or analysis; with `full`, promote at once (operator)",
                   dependencies=[require("operator", "promote")],
                   responses=verb_responses("operator"))
    async def promote(name: ServiceName, request: Request,
                      full: Annotated[bool, Query(description="Skip every remaining step")] = False) -> dict[str, Any]:
        c = _controller(request)
        return delivery_view(c, await c.act(name, "promote", full=full, actor=_who(request)))

    for verb, (summary, role) in PLAIN_VERBS.items():
        mutating.post(f"/services/{{name}}/{verb}", operation_id=verb, response_model=DeliveryView, summary=summary,
                      dependencies=[require(role, verb)],
                      responses=verb_responses(role))(_verb_route(verb))

    @mutating.post("/services/{name}/approve", operation_id="approve", response_model=DeliveryView,
                   summary="Approve (or reject) what the delivery waits for, as the token's name (operator)",
                   description="An approval step, or a confirm hook people may answer (every confirm-promotion "
                               "hook; others with an `approval` policy). A rejection rolls the delivery back. "
                               "Approvals and refusals are in the event log.",
                   dependencies=[require("operator", "approve")],
                   responses={**ok("The delivery after the approval"),
                              **documented([401, 403, 404, 409, 422, 503], {
                                  403: "The token's role is below operator, or its name is not among the approvers",
                                  404: VERB_404, 409: "Nothing waits for an approval now, or this token approved "
                                                      "it already"})})
    async def approve(name: ServiceName, request: Request, comment: Comment = "", reject: Reject = False
                      ) -> dict[str, Any]:
        c = _controller(request)
        return delivery_view(c, await c.approve(name, who=_who(request), comment=comment, reject=reject))

    @mutating.post("/services/{name}/undo", operation_id="undo", response_model=DeliveryView,
                   summary="Deliver the previous stable release again (admin)",
                   dependencies=[require("admin", "undo")],
                   responses={**ok("The delivery undo started"),
                              **documented([401, 403, 404, 409, 422, 503], {409: "A delivery is in flight, or there "
                                           "is no previous release to go back to"})})
    async def undo(name: ServiceName, request: Request) -> dict[str, Any]:
        c = _controller(request)
        return delivery_view(c, await c.undo(name, actor=_who(request)))


def _add_delete(mutating: APIRouter) -> None:
    """delete: the end of a service's data plane, its history kept."""

    @mutating.delete(
        "/services/{name}", operation_id="deleteService", response_model=Deletion,
        summary="Delete a service: drain and stop its router, stop its instances, forget it (admin)",
        dependencies=[require("admin", "delete a service")],
        description="The router stops taking requests and finishes the ones in flight before the instances "
                    "stop. The service's deliveries and events stay readable (history, events); applying its "
                    "name again makes a new service. The answer names the processes stopped (or left running).",
        responses={**ok("Deleted: the processes stopped (or, with keep_running, left running)"),
                   **documented([401, 403, 404, 409, 422, 503], {
                       409: "A delivery is in flight: abort it first, or use force",
                       503: "A router or an instance could not be stopped; the service is kept, and the "
                            "controller restores it"})})
    async def delete(
        name: ServiceName, request: Request,
        keep_running: Annotated[bool, Query(description="Forget the service but leave its router and "
                                                        "instances running, unmanaged")] = False,
        force: Annotated[bool, Query(description="Delete even with a delivery in flight; it ends Failed "
                                                 "where it stands")] = False,
    ) -> Deletion:
        return await _controller(request).delete(name, keep_running=keep_running, force=force)

