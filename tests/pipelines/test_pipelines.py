"""Pipelines over the real controller and store, on the fakes: stages in order, soak, approvals, a failure that
stops a release where it failed."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from stagewise.core.pipeline import PipelineSpec
from stagewise.core.spec import ServiceSpec
from stagewise.errors import ConflictError, ForbiddenError, SpecError
from stagewise.pipelines import Pipelines
from tests.controller.conftest import BASE, World

CANARY: dict[str, Any] = {"canary": {"steps": [{"setWeight": 50}, {"analysis": {"templates": ["errors"],
                                                                                "duration": "10s"}}]}}


def service(name: str, port: int) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = name
    doc["spec"]["listen"] = f"127.0.0.1:{port}"
    doc["spec"]["release"]["run"]["command"] = ["app", "--port", "{port}", "--version", "{version}"]
    doc["spec"]["strategy"] = CANARY
    return doc


def pipeline(**production: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "shop"},
        "spec": {"stages": [
            {"name": "staging", "service": service("shop-staging", 18081), "requiredSoak": "30s"},
            {"name": "production", "service": service("shop-prod", 18082), **production},
        ]},
    })


class Bench:
    def __init__(self, world: World) -> None:
        self.world = world
        self.pipelines = Pipelines(world.controller)

    async def run(self, until: set[str], seconds: float = 600) -> dict[str, Any]:
        end = self.world.clock.now + seconds
        while self.world.clock.now < end:
            await self.world.controller.tick()
            await self.pipelines.tick()
            await asyncio.sleep(0)
            self.world.clock.advance(0.25)
            latest = self.pipelines.store.pipeline_releases("shop", limit=1)[0]
            if latest.phase in until:
                return latest.model_dump()
        return latest.model_dump()


@pytest.fixture
async def bench(tmp_path: Path) -> Any:
    world = World(tmp_path)
    b = Bench(world)
    await b.pipelines.apply(pipeline())
    yield b
    await b.pipelines.close()
    world.controller.store.close()


def stable(world: World, name: str) -> str | None:
    record = world.controller.store.get_service(name)
    return record.stable.version if record and record.stable else None


async def test_a_good_release_goes_through_both_stages_and_a_bad_one_stops_in_staging(bench: Bench) -> None:
    world = bench.world
    r = await bench.pipelines.release("shop", "v1")
    assert [s.status for s in r.stages] == ["delivering", "pending"]
    assert (await bench.run({"Succeeded", "Failed"}))["phase"] == "Succeeded"
    assert stable(world, "shop-staging") == stable(world, "shop-prod") == "v1"
    assert (await bench.pipelines.release("shop", "v2")).version == "v2"
    with pytest.raises(ConflictError, match="release v2 of shop is Progressing"):
        await bench.pipelines.release("shop", "v9")
    done = await bench.run({"Succeeded", "Failed"})
    assert done["phase"] == "Succeeded" and [s["status"] for s in done["stages"]] == ["succeeded", "succeeded"]
    staging, production = done["stages"]
    assert production["started_at"] >= staging["soak_until"] >= staging["started_at"] + 30
    assert stable(world, "shop-prod") == "v2"
    assert world.platform.instances["shop-prod"] and all(
        i.release == "v2" for i in world.platform.instances["shop-prod"].values())

    world.router.error_rate["v3"] = 0.3
    await bench.pipelines.release("shop", "v3")
    done = await bench.run({"Succeeded", "Failed"})
    assert done["phase"] == "Failed"
    assert [s["status"] for s in done["stages"]] == ["failed", "stopped"]
    assert done["stages"][0]["message"].startswith("v3 RolledBack on shop-staging: analysis Failed")
    assert stable(world, "shop-staging") == "v2" and stable(world, "shop-prod") == "v2"
    assert "v3" not in {d.candidate.version for d in world.controller.store.deliveries("shop-prod")}
    events = [e.message for e in world.controller.store.events("shop-staging", limit=1000)]
    assert "applied v3 by pipeline shop" in events


async def test_a_stage_with_an_approval_waits_for_its_approvers(bench: Bench) -> None:
    await bench.pipelines.apply(pipeline(approval={"approvers": ["alice"]}))
    await bench.pipelines.release("shop", "v1")
    r = await bench.run({"Succeeded", "Failed"}, seconds=200)
    assert r["phase"] == "Progressing" and [s["status"] for s in r["stages"]] == ["succeeded", "waiting"]
    assert "waiting for 1 approval(s) from alice" in r["stages"][1]["message"]
    with pytest.raises(ForbiddenError, match="bob is not among the approvers of production"):
        await bench.pipelines.approve("shop", who="bob")
    await bench.pipelines.approve("shop", who="alice", comment="go")
    assert (await bench.run({"Succeeded", "Failed"}))["phase"] == "Succeeded"


async def test_a_rejected_stage_stops_the_release(bench: Bench) -> None:
    await bench.pipelines.apply(pipeline(approval={}))
    await bench.pipelines.release("shop", "v1")
    await bench.run({"Succeeded", "Failed"}, seconds=200)
    r = await bench.pipelines.approve("shop", who="carol", comment="not before the sale", reject=True)
    assert r.phase == "Failed" and r.stages[1].message == "rejected by carol: not before the sale"


async def test_references_must_exist_and_verification_judges_one_release(bench: Bench, tmp_path: Path) -> None:
    spec = pipeline().model_dump(by_alias=True)
    spec["spec"]["stages"][1] = {"name": "production", "serviceRef": "nowhere"}
    with pytest.raises(SpecError, match="no service named 'nowhere': apply it first"):
        await bench.pipelines.apply(PipelineSpec.model_validate(spec))
    bad = copy.deepcopy(spec)
    bad["spec"]["stages"][1] = {"name": "production", "service": service("shop-prod", 18082),
                                "verification": {"templates": ["errors"]}}
    with pytest.raises(ValueError, match="verification checks the release alone"):
        PipelineSpec.model_validate(bad)
    await bench.world.controller.apply(ServiceSpec.model_validate(service("shop-prod", 18082)))
    spec["spec"]["stages"][1] = {"name": "production", "serviceRef": "shop-prod"}
    assert await bench.pipelines.apply(PipelineSpec.model_validate(spec)) == ("pipeline configured: "
                                                                              "staging → production")
    await bench.pipelines.release("shop", "v7")
    done = await bench.run({"Succeeded", "Failed"})
    assert done["phase"] == "Succeeded" and stable(bench.world, "shop-prod") == "v7"
