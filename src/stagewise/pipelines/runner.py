"""Pipelines at work: apply them, start releases, and move each release on, through the controller.

A loop beside the controller's (started by the server): each pass reads the
releases in flight from the store, looks at each stage's service (its
delivery of the release, its stable release), collects verification checks,
asks `machine.advance` what comes next, **commits** the release's new state
and only then applies the next stage's spec through `Controller.apply` —
which is idempotent, so a pass repeated after a crash gives the stage the
same release again ("being delivered") rather than a second one. Every
delivery it starts says so in its service's event log ("applied v2 by
pipeline shop").

It never decides how a delivery goes (the controller does) and never
touches a driver: it reads the store and calls the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from stagewise.controller import Controller
from stagewise.core.pipeline import PipelineRecord, PipelineRelease, PipelineSpec, verification_problem
from stagewise.core.spec import ServiceSpec
from stagewise.errors import ConflictError, ForbiddenError, NotFoundError, Problem, SpecError, StagewiseError
from stagewise.pipelines import machine
from stagewise.pipelines.machine import StageView
from stagewise.pipelines.verify import Verifier

log = logging.getLogger("stagewise.pipelines")

PASS = 0.5
"""Seconds between passes over the releases in flight."""


class Pipelines:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.store = controller.store
        self.clock = controller.clock
        self._lock = asyncio.Lock()
        self._verifier = Verifier()

    # --- verbs ---

    async def apply(self, spec: PipelineSpec, *, actor: str = "", filename: str = "<request>") -> str:
        """Store a pipeline; its references must name services that exist."""
        problems = []
        for index, stage in enumerate(spec.spec.stages):
            where = f"spec.stages[{index}]"
            if stage.service_ref is not None:
                record = self.store.get_service(stage.service_ref)
                if record is None:
                    problems.append(Problem(filename, 1, 1, f"{where}.serviceRef",
                                            f"no service named {stage.service_ref!r}: apply it first"))
                elif stage.verification is not None:
                    problem = verification_problem(stage.verification, record.spec)
                    if problem:
                        problems.append(Problem(filename, 1, 1, f"{where}.verification", problem))
        if problems:
            raise SpecError(problems)
        async with self._lock:
            now = self.clock()
            before = self.store.get_pipeline(spec.name)
            self.store.put_pipeline(PipelineRecord(name=spec.name, spec=spec, updated_at=now,
                                                   created_at=before.created_at if before else now))
        by = f" by {actor}" if actor else ""
        route = " → ".join(s.name for s in spec.spec.stages)
        log.info("pipeline %s %s%s: %s", spec.name, "changed" if before else "created", by, route)
        return f"pipeline {'configured' if before else 'created'}: {route}"

    async def release(self, name: str, version: str, *, actor: str = "") -> PipelineRelease:
        """Start `version` on its way through the pipeline `name` (one release at a time)."""
        async with self._lock:
            record = self._record(name)
            active = self.store.pipeline_releases(name, active=True, limit=1)
            if active:
                a = active[0]
                where = next((s.name for s in a.stages if s.status not in ("succeeded",)), "-")
                raise ConflictError(f"release {a.version} of {name} is {a.phase} (at {where}); wait for it to end")
            release = machine.new_release(record.spec, version, now=self.clock(), by=actor)
            release = self.store.create_pipeline_release(release)
            log.info("pipeline %s: release %s started%s", name, version, f" by {actor}" if actor else "")
            return await self._pass(record, release)

    async def approve(self, name: str, *, who: str, comment: str = "", reject: bool = False) -> PipelineRelease:
        async with self._lock:
            record = self._record(name)
            active = self.store.pipeline_releases(name, active=True, limit=1)
            if not active:
                raise ConflictError(f"no release of {name} is in flight")
            now = self.clock()
            try:
                if reject:
                    release = machine.reject(active[0], record.spec, who=who, comment=comment, now=now)
                    said = f"{who} rejected {release.version}"
                else:
                    release, said = machine.approve(active[0], record.spec, who=who, comment=comment, now=now)
            except PermissionError as exc:
                raise ForbiddenError(f"cannot approve {name}: {exc}") from exc
            except LookupError as exc:
                raise ConflictError(f"cannot approve {name}: {exc}") from exc
            self.store.save_pipeline_release(release)
            log.info("pipeline %s: %s", name, said)
            return await self._pass(record, release)

    def _record(self, name: str) -> PipelineRecord:
        record = self.store.get_pipeline(name)
        if record is None:
            raise NotFoundError(f"no pipeline named {name!r}")
        return record

    # --- the loop ---

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=PASS)
        finally:
            await self._verifier.close()

    async def tick(self) -> None:
        for release in self.store.pipeline_releases(active=True, limit=1000):
            async with self._lock:
                record = self.store.get_pipeline(release.pipeline)
                if record is None:
                    continue
                try:
                    await self._pass(record, release)
                except StagewiseError as exc:  # one pipeline's trouble must not stop the others
                    log.warning("pipeline %s, release %s: %s", release.pipeline, release.version, exc)

    async def _pass(self, record: PipelineRecord, release: PipelineRelease) -> PipelineRelease:
        spec = record.spec
        now = self.clock()
        templates = {s.name: self._template(spec, i) for i, s in enumerate(spec.spec.stages)}
        soaking = [(s.name, templates[s.name], s.verification.templates) for s, state in
                   zip(spec.spec.stages, release.stages, strict=True)
                   if state.status == "soaking" and s.verification is not None and templates[s.name] is not None]
        checks = self._verifier.collect(release, [(n, t, v) for n, t, v in soaking if t is not None], now)
        limits = {name: min((t.spec.analysis[v].failure_limit for v in vs), default=1)
                  for name, t, vs in soaking if t is not None}
        step = machine.advance(release, spec, self._views(release), checks, now=now, failure_limits=limits)
        current = step.release
        if current != release:
            self.store.save_pipeline_release(current)
        for line in step.events:
            log.info("pipeline %s: %s", release.pipeline, line)
        for index in step.deliver:
            current = await self._deliver(spec, current, index)
        return current

    def _views(self, release: PipelineRelease) -> dict[str, StageView]:
        views = {}
        for state in release.stages:
            record = self.store.get_service(state.service)
            stable = record.stable.version if record is not None and record.stable is not None else None
            delivery = self.store.get_delivery(state.delivery) if state.delivery is not None else None
            if delivery is not None and delivery.candidate.version == release.version:
                views[state.name] = StageView(delivery_phase=delivery.phase,
                                              delivery_message=delivery.abort_reason or delivery.message, stable=stable)
            else:
                views[state.name] = StageView(stable=stable)
        return views

    def _template(self, spec: PipelineSpec, index: int) -> ServiceSpec | None:
        stage = spec.spec.stages[index]
        if stage.service is not None:
            return stage.service
        record = self.store.get_service(str(stage.service_ref))
        return record.spec if record is not None else None

    async def _deliver(self, spec: PipelineSpec, release: PipelineRelease, index: int) -> PipelineRelease:
        """Give stage `index` the release (through the controller), and keep which delivery that is."""
        state = release.stages[index]
        template = self._template(spec, index)
        if template is None:
            state.message = f"the service {state.service} is gone; apply it again"
            self.store.save_pipeline_release(release)
            return release
        target = stage_spec(template, release.version)
        by = f"pipeline {release.pipeline}" + (f" ({release.by})" if release.by else "")
        try:
            _, delivery = await self.controller.apply(target, actor=by)
        except ConflictError as exc:
            state.message = f"waiting for {state.service}: {exc}"
            self.store.save_pipeline_release(release)
            return release
        state.delivery = delivery.id if delivery is not None else None
        state.message = f"delivering {release.version} to {state.service}" if delivery is not None else \
            f"{release.version} is already the stable release of {state.service}"
        self.store.save_pipeline_release(release)
        return release

    async def close(self) -> None:
        await self._verifier.close()


def stage_spec(template: ServiceSpec, version: str) -> ServiceSpec:
    """The stage's Service spec for `version`: its release renamed (`{version}` in its command is replaced by the
    controller when instances start)."""
    release = template.spec.release.model_copy(update={"version": version})
    return template.model_copy(update={"spec": template.spec.model_copy(update={"release": release})})
