"""Scenarios: the simulated service, its traffic, its releases and their faults, as YAML.

A scenario says what the world is like — how many instances, how long they
take to start, how many requests arrive and from how many users, how the
stable, a good and a bad release behave, how quickly a person reacts to an
alert — and with which parameters each strategy is run. `stagewise compare`
runs every strategy over the same scenario.

Scenario files are read like Service specs: with the same YAML reader, and
every mistake reported as file:line:column with what would be right. The
strategy and analysis sections use the very models of a Service spec, so a
scenario's `canary:` is written exactly as in a spec. A scenario that leaves
out `strategies` or `analysis` (or one strategy) gets those of the default
scenario shipped in this package.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Annotated

from pydantic import Field, ValidationError

from stagewise.core.spec import (
    AnalysisTemplate,
    AnyStrategy,
    BlueGreenSpec,
    BlueGreenStrategy,
    CanarySpec,
    CanaryStrategy,
    Duration,
    FullSpec,
    FullStrategy,
    Model,
    PhasedSpec,
    PhasedStrategy,
    StrategyName,
    analysis_refs,
)
from stagewise.errors import Problem, SpecError
from stagewise.spec.messages import describe, problems_from
from stagewise.spec.yamltree import Document, compose_documents

Share = Annotated[float, Field(ge=0, le=1)]
STRATEGY_NAMES: tuple[StrategyName, ...] = ("full", "phased", "canary", "blue-green")


class Latency(Model):
    median: Duration = 0.02
    """Median response time (`20ms`)."""
    p99: Duration = 0.08
    """99th percentile; with the median it fixes a lognormal."""
    slow_share: Share = 0.0
    """Share of requests that wait `slowBy` longer (a lock, a cold cache)."""
    slow_by: Duration = 0.1


class ReleaseBehaviour(Model):
    error_rate: Share = 0.001
    """Share of requests answered with an error (5xx)."""
    latency: Latency = Latency()
    crash_on_start: Share = 0.0
    """Chance that an instance exits instead of getting ready."""
    startup: Duration | None = None
    """Seconds from start to ready; none: the fleet's `startup`."""


class Releases(Model):
    stable: ReleaseBehaviour = ReleaseBehaviour()
    """The release serving users before each delivery."""
    good: ReleaseBehaviour = ReleaseBehaviour()
    """A release that should be promoted."""
    bad: ReleaseBehaviour = ReleaseBehaviour(error_rate=0.05)
    """A release that should be rolled back."""


class Fleet(Model):
    replicas: Annotated[int, Field(ge=1, le=1000)] = 10
    startup: Duration = 5.0
    """Seconds an instance takes from start to ready, on average."""
    startup_jitter: Duration = 2.0
    """Each start takes `startup` ± up to this much."""


class Daily(Model):
    amplitude: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """The rate swings this share above and below its mean over a day."""
    peak_at: Duration = 14 * 3600.0
    """Time of day of the busiest moment."""


class Testers(Model):
    share: Share = 0.0
    """Share of requests that carry the preview and canary headers (testers, synthetic checks)."""
    users: Annotated[int, Field(ge=1, le=100_000)] = 20


class Traffic(Model):
    rate: Annotated[float, Field(gt=0, le=100_000)] = 200.0
    """Requests per second, at the daily mean."""
    users: Annotated[int, Field(ge=1, le=10_000_000)] = 50_000
    """Distinct users behind the requests; each request comes from one drawn at random."""
    keyed_share: Share = 1.0
    """Share of requests carrying the cohort key (a user id header or cookie)."""
    daily: Daily = Daily()
    start_at: Duration = 10 * 3600.0
    """Time of day the delivery starts."""
    testers: Testers = Testers()


class Human(Model):
    alert_error_rate: Annotated[float, Field(gt=0, le=1)] = 0.01
    """The alert fires when this share of all requests fails over `alertWindow`."""
    alert_window: Duration = 60.0
    delay: Duration = 300.0
    """From the alert to a person acting (abort, or undo once promoted), if the alert still fires then."""


class Strategies(Model):
    """Parameters per strategy, written as under `strategy:` in a Service spec."""

    full: FullSpec | None = None
    phased: PhasedSpec | None = None
    canary: CanarySpec | None = None
    blue_green: BlueGreenSpec | None = None

    def strategy(self, name: StrategyName) -> AnyStrategy:
        """The `strategy:` of a Service spec with these parameters (`complete` fills in those left out)."""
        if name == "full" and self.full is not None:
            return FullStrategy(full=self.full)
        if name == "phased" and self.phased is not None:
            return PhasedStrategy(phased=self.phased)
        if name == "canary" and self.canary is not None:
            return CanaryStrategy(canary=self.canary)
        if name == "blue-green" and self.blue_green is not None:
            return BlueGreenStrategy(blue_green=self.blue_green)
        raise ValueError(f"the scenario gives no parameters for {name}")


class Scenario(Model):
    name: str = "scenario"
    description: str = ""
    fleet: Fleet = Fleet()
    traffic: Traffic = Traffic()
    releases: Releases = Releases()
    human: Human = Human()
    tick: Duration = 1.0
    """Time between controller passes (0.05s to 1m); traffic is drawn per tick."""
    horizon: Duration = 7200.0
    """A run stops after this much simulated time, finished or not."""
    progress_deadline: Duration = 600.0
    analysis: dict[str, AnalysisTemplate] = Field(default_factory=dict)
    strategies: Strategies = Strategies()


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """The scenario in the YAML file at `path`; `SpecError` with file:line:column when it is wrong."""
    filename = os.fspath(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read(1 << 20)
    except OSError as exc:
        raise SpecError([Problem(filename, 1, 1, "", f"cannot read the scenario: {exc.strerror or exc}")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(filename, 1, 1, "", "the scenario is not UTF-8 text")]) from exc
    return load_scenario_text(text, filename)


def load_scenario_text(text: str, filename: str = "<scenario>") -> Scenario:
    """The scenario in `text`, with anything it leaves out taken from the default scenario."""
    doc = _document(text, filename)
    scenario = _validate(doc, filename)
    if filename != _DEFAULT_NAME:
        scenario = complete(scenario, default_scenario())
    _check(scenario, doc, filename)
    return scenario


_DEFAULT_NAME = "stagewise/sim/scenarios/default.yaml"


def default_scenario() -> Scenario:
    """The scenario shipped with stagewise: 200 requests/s, 10 instances, a bad release failing 5%."""
    text = resources.files("stagewise.sim").joinpath("scenarios/default.yaml").read_text("utf-8")
    return load_scenario_text(text, _DEFAULT_NAME)


def complete(scenario: Scenario, defaults: Scenario) -> Scenario:
    """`scenario` with the strategies and analysis templates it leaves out taken from `defaults`."""
    strategies = {
        name: getattr(scenario.strategies, name) or getattr(defaults.strategies, name)
        for name in ("full", "phased", "canary", "blue_green")
    }
    analysis = {**defaults.analysis, **scenario.analysis}
    return scenario.model_copy(update={"strategies": Strategies(**strategies), "analysis": analysis})


def _document(text: str, filename: str) -> Document:
    documents = compose_documents(text, filename)
    if len(documents) != 1:
        line = documents[1].start.line if len(documents) > 1 else 1
        raise SpecError([Problem(filename, line, 1, "", f"expected one scenario, found {len(documents)} "
                                 "YAML documents")])
    doc = documents[0]
    if not isinstance(doc.data, dict):
        raise SpecError([Problem(filename, doc.start.line, doc.start.column, "",
                                 f"expected a mapping (fleet, traffic, releases, ...), got {describe(doc.data)}")])
    return doc


def _validate(doc: Document, filename: str) -> Scenario:
    try:
        return Scenario.model_validate(doc.data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise SpecError(problems_from(exc, Scenario, doc, filename)) from exc


def _check(scenario: Scenario, doc: Document, filename: str) -> None:
    """What one field cannot say alone: the tick's range, and that named templates exist."""
    problems: list[Problem] = []
    if not 0.05 <= scenario.tick <= 60:
        where = doc.where[("tick",)].point if ("tick",) in doc.where else doc.start
        problems.append(Problem(filename, where.line, where.column, "tick",
                                f"expected a tick from 50ms to 1m, got {scenario.tick:g}s"))
    known = set(scenario.analysis)
    for name in STRATEGY_NAMES:
        key = "blueGreen" if name == "blue-green" else name
        missing = sorted({t for ref in _refs(scenario.strategies.strategy(name)) for t in ref if t not in known})
        if missing:
            located = doc.where.get(("strategies", key)) or doc.where.get(("strategies",))
            where = located.point if located else doc.start
            problems.append(Problem(filename, where.line, where.column, f"strategies.{key}",
                                    f"analysis template {', '.join(map(repr, missing))} is not defined in "
                                    f"analysis (defined: {', '.join(sorted(known)) or 'none'})"))
    if problems:
        raise SpecError(problems)


def _refs(strategy: AnyStrategy) -> list[list[str]]:
    return [ref.templates for ref in analysis_refs(strategy)]
