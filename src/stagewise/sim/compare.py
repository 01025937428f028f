"""Every strategy over the same scenario, a good and a bad release, many seeds: the numbers.

`compare` builds one Service spec per strategy from the scenario (its fleet,
its analysis templates, the strategy's parameters), delivers the good and
the bad release with each over `seeds` seeds, and sums the runs up per
strategy: medians of what users went through and what it cost. A seed fixes
the traffic, the start-up times and the crashes, and every strategy meets the
same seeds.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from stagewise.core.plan import Plan
from stagewise.core.spec import Metadata, ReleaseSpec, RunSpec, ServiceBody, ServiceSpec, StrategyName
from stagewise.sim.loop import simulate
from stagewise.sim.result import RunResult
from stagewise.sim.scenario import STRATEGY_NAMES, Scenario
from stagewise.strategies import compile_plan

VERSIONS = {"stable": "v1", "good": "v2", "bad": "v3"}
"""The release versions of a scenario's stable, good and bad release."""


def release(which: str) -> ReleaseSpec:
    version = VERSIONS[which]
    return ReleaseSpec(version=version, run=RunSpec(command=["simulated", version]))


def service_spec(scenario: Scenario, strategy: StrategyName, which: str) -> ServiceSpec:
    """The Service spec that delivers the scenario's `which` release ("good" or "bad") with `strategy`."""
    return ServiceSpec(
        api_version="stagewise.dev/v1alpha1", kind="Service",
        metadata=_metadata(scenario.name),
        spec=ServiceBody(
            listen="127.0.0.1:8080", replicas=scenario.fleet.replicas, release=release(which),
            strategy=scenario.strategies.strategy(strategy), analysis=dict(scenario.analysis),
            progress_deadline=scenario.progress_deadline,
        ),
    )


def run_one(scenario: Scenario, strategy: StrategyName, which: str, seed: int, *,
            exact: bool = False, record: bool = False) -> RunResult:
    """One delivery of the scenario's `which` release with `strategy`."""
    behaviours = {VERSIONS[k]: getattr(scenario.releases, k) for k in VERSIONS}
    return simulate(
        service_spec(scenario, strategy, which), release("stable"),
        traffic=scenario.traffic, fleet=scenario.fleet, behaviours=behaviours, human=scenario.human,
        seed=seed, tick=scenario.tick, horizon=scenario.horizon, exact=exact, record=record, strategy=strategy,
        count_users=which == "bad",
    )


@dataclass
class Summary:
    """One strategy's runs, summed up."""

    strategy: StrategyName
    good: list[RunResult]
    bad: list[RunResult]
    steps: int
    """Steps of the plan for a good release."""
    parts: list[str]
    """The moving parts the strategy needs besides instances and a router."""
    numbers: dict[str, float | None] = field(default_factory=dict)

    def outcomes(self, which: str) -> dict[str, int]:
        return dict(Counter(r.outcome for r in (self.good if which == "good" else self.bad)))

    def deciders(self) -> dict[str, int]:
        return dict(Counter(r.decided_by or "nobody" for r in self.bad))


@dataclass
class Comparison:
    scenario: Scenario
    seeds: int
    summaries: dict[str, Summary]


def compare(scenario: Scenario, *, seeds: int = 20, strategies: Iterable[StrategyName] = STRATEGY_NAMES,
            record_seed: int | None = 0, progress: Callable[[str], None] | None = None) -> Comparison:
    """Run every strategy on a good and a bad release over `seeds` seeds; `record_seed` keeps timelines."""
    summaries: dict[str, Summary] = {}
    for name in strategies:
        if progress is not None:
            progress(name)
        good = [run_one(scenario, name, "good", s, record=s == record_seed) for s in range(seeds)]
        bad = [run_one(scenario, name, "bad", s, record=s == record_seed) for s in range(seeds)]
        plan = compile_plan(service_spec(scenario, name, "good"), release("stable"))
        summary = Summary(strategy=name, good=good, bad=bad, steps=len(plan.steps),
                          parts=moving_parts(plan, service_spec(scenario, name, "good")))
        summary.numbers = numbers(summary, scenario.fleet.replicas)
        summaries[name] = summary
    return Comparison(scenario=scenario, seeds=seeds, summaries=summaries)


def numbers(s: Summary, replicas: int) -> dict[str, float | None]:
    """The measured columns: medians over the seeds, and the largest capacity seen."""
    caught = [r for r in s.bad if r.rolled_back]
    return {
        "bad_requests": _median(r.candidate_requests for r in s.bad),
        "bad_errors": _median(r.candidate_errors for r in s.bad),
        "bad_users": _median(r.candidate_users for r in s.bad),
        "detect_s": _median(r.detect_s for r in caught),
        "rollback_s": _median(r.rollback_s for r in caught),
        "recovery_s": _median(r.recovery_s for r in caught),
        "rollout_s": _median(r.full_at for r in s.good if r.outcome == "Succeeded"),
        "done_s": _median(r.finished_at for r in s.good if r.outcome == "Succeeded"),
        "peak_extra": float(max((r.peak_extra for r in s.good + s.bad), default=0)),
        "peak_extra_pct": 100.0 * max((r.peak_extra for r in s.good + s.bad), default=0) / replicas,
        "downtime_good_s": _median(r.downtime for r in s.good),
        "downtime_bad_s": _median(r.downtime for r in s.bad),
        "failed_good": _median(r.failed_requests for r in s.good),
        "caught_share": len(caught) / len(s.bad) if s.bad else None,
        "promoted_share": sum(r.outcome == "Succeeded" for r in s.good) / len(s.good) if s.good else None,
        "steps": float(s.steps),
        "parts": float(len(s.parts)),
    }


def moving_parts(plan: Plan, spec: ServiceSpec) -> list[str]:
    """What a strategy needs beyond instances and a router, read off its plan."""
    n = spec.spec.replicas
    worlds = [step.world for step in plan.steps]
    stable = plan.steps[0].world.stable
    parts: list[str] = []
    if any(w.weights and sum(1 for v in w.weights.values() if v > 0) > 1 for w in worlds):
        parts.append("weighted routing")
    if any(w.cohort is not None for w in worlds):
        parts.append("a cohort key on every request")
    if any(w.header_routes for w in worlds):
        parts.append("header routes")
    if any(w.preview for w in worlds):
        parts.append("a preview route")
    if any(sum(w.instances.values()) >= 2 * n for w in worlds):
        parts.append("a second full set of instances")
    if any(0 < w.instances.get(stable, 0) < n for w in worlds):
        parts.append("instances replaced in place")
    templates = {t for step in plan.steps if step.analysis for t in step.analysis.templates}
    if plan.background is not None:
        templates |= set(plan.background.gate.templates)
    if templates:
        parts.append(f"live metrics and analysis ({', '.join(sorted(templates))})")
    if any(step.pause for step in plan.steps):
        parts.append("timed gates")
    if any(step.manual for step in plan.steps):
        parts.append("a person to promote")
    return parts


def _median(values: Iterable[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def _metadata(name: str) -> Metadata:
    """The scenario's name when it is a valid service name, else a neutral one."""
    try:
        return Metadata(name=name)
    except ValidationError:
        return Metadata(name="simulated")
