"""The routes of pipelines: read them, start a release, approve a stage.

A pipeline is applied like a service (`POST /api/v1/apply` with a `kind:
Pipeline` spec); these routes read its releases and move them. Each is one
call to `stagewise.pipelines.Pipelines`, rendered plainly.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from stagewise.api.access import Caller, ReadAccess, reader, require
from stagewise.api.models import NAME_PATTERN, PAGE_MAX, PipelineReleaseView, PipelineView, ReleaseBody
from stagewise.api.refusals import documented
from stagewise.api.routes import Comment, Reject
from stagewise.core.pipeline import PipelineRecord
from stagewise.errors import NotFoundError
from stagewise.pipelines import Pipelines

PipelineName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, examples=["shop"],
                                   description="The pipeline's `metadata.name`.")]


def _pipelines(request: Request) -> Pipelines:
    p: Pipelines = request.app.state.pipelines
    return p


def pipeline_view(p: Pipelines, record: PipelineRecord, *, releases: int = 20) -> dict[str, Any]:
    stages = [{"name": s.name, "service": s.service_name, "required_soak": s.required_soak,
               "verification": list(s.verification.templates) if s.verification else [],
               "approval": s.approval is not None} for s in record.spec.spec.stages]
    return {"name": record.name, "stages": stages,
            "releases": [r.model_dump() for r in p.store.pipeline_releases(record.name, limit=releases)]}


def build_pipeline_router(reads: ReadAccess = "open") -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    readers = APIRouter(dependencies=[reader(reads)])

    @readers.get("/pipelines", operation_id="listPipelines", response_model=list[PipelineView],
                 summary="Every pipeline with its latest release",
                 responses={200: {"description": "The pipelines, by name"}, **documented([401, 403, 503])})
    async def pipelines(request: Request) -> list[dict[str, Any]]:
        p = _pipelines(request)
        return [pipeline_view(p, r, releases=1) for r in p.store.list_pipelines()]

    @readers.get("/pipelines/{name}", operation_id="getPipeline", response_model=PipelineView,
                 summary="A pipeline's stages and where each of its releases stands",
                 responses={200: {"description": "The pipeline"}, **documented([401, 403, 404, 422, 503])})
    async def pipeline(name: PipelineName, request: Request,
                       limit: Annotated[int, Query(ge=1, le=PAGE_MAX, description="At most this many releases")]
                       = 20) -> dict[str, Any]:
        p = _pipelines(request)
        record = p.store.get_pipeline(name)
        if record is None:
            raise NotFoundError(f"no pipeline named {name!r}")
        return pipeline_view(p, record, releases=limit)

    @router.post("/pipelines/{name}/releases", operation_id="release", response_model=PipelineReleaseView,
                 summary="Start a release on its way through the pipeline's stages (admin)",
                 responses={200: {"description": "The release, as it stands after its first step"},
                            **documented([401, 403, 404, 409, 422, 503], {
                                404: "No pipeline by that name",
                                409: "A release of this pipeline is in flight; wait for it to end"})})
    async def release(name: PipelineName, body: ReleaseBody, request: Request,
                      caller: Annotated[Caller, require("admin", "start a release")]) -> dict[str, Any]:
        return (await _pipelines(request).release(name, body.version, actor=caller.name)).model_dump()

    @router.post("/pipelines/{name}/approve", operation_id="approvePipeline", response_model=PipelineReleaseView,
                 summary="Approve (or reject) the stage the release in flight waits at (operator)",
                 responses={200: {"description": "The release after the approval"},
                            **documented([401, 403, 404, 409, 422, 503], {
                                403: "The token's role is below operator, or its name is not among the approvers",
                                404: "No pipeline by that name",
                                409: "No release waits for an approval, or this token approved already"})})
    async def approve(name: PipelineName, request: Request,
                      caller: Annotated[Caller, require("operator", "approve")],
                      comment: Comment = "", reject: Reject = False) -> dict[str, Any]:
        r = await _pipelines(request).approve(name, who=caller.name, comment=comment, reject=reject)
        return r.model_dump()

    router.include_router(readers)
    return router
