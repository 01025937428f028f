"""Scenario files: read like specs, mistakes reported as file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagewise.errors import SpecError
from stagewise.sim import default_scenario, load_scenario, load_scenario_text
from stagewise.sim.compare import moving_parts, release, service_spec
from stagewise.strategies import compile_plan

pytestmark = pytest.mark.timeout(30)


def test_the_default_scenario_is_the_one_the_issue_names() -> None:
    s = default_scenario()
    assert s.traffic.rate == 200 and s.fleet.replicas == 10 and s.releases.bad.error_rate == 0.05
    for name in ("full", "phased", "canary", "blue-green"):
        spec = service_spec(s, name, "good")  # type: ignore[arg-type]
        assert spec.spec.strategy.name == name
        assert compile_plan(spec, release("stable")).steps


def test_a_scenario_takes_what_it_leaves_out_from_the_default() -> None:
    s = load_scenario_text("name: tiny\nfleet: {replicas: 3}\nstrategies: {full: {}}\n")
    assert s.fleet.replicas == 3
    assert s.strategies.canary == default_scenario().strategies.canary
    assert "errors" in s.analysis


def test_a_scenario_can_set_its_own_strategy_parameters() -> None:
    s = load_scenario_text("strategies:\n  canary:\n    steps: [{setWeight: 20}, {pause: {duration: 1m}}]\n")
    assert s.strategies.canary is not None and s.strategies.canary.steps[0].set_weight == 20
    plan = compile_plan(service_spec(s, "canary", "good"), release("stable"))
    assert "weighted routing" in moving_parts(plan, service_spec(s, "canary", "good"))


@pytest.mark.parametrize(("text", "where", "words"), [
    ("fleet:\n  replicas: zero\n", (2, 13), "fleet.replicas"),
    ("traffic:\n  rate: 200\n  userz: 5\n", (3, 3), "userz"),
    ("releases:\n  bad: {errorRate: 1.5}\n", (2, 20), "at most 1"),
    ("tick: 5h\n", (1, 7), "50ms to 1m"),
    ("strategies:\n  canary:\n    steps: [{analysis: {templates: [nope]}}]\n", (2, 3), "'nope' is not defined"),
    ("- a\n- b\n", (1, 1), "expected a mapping"),
    ("fleet: [1\n", (1, 1), ""),
])
def test_mistakes_are_reported_where_they_are(text: str, where: tuple[int, int], words: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_scenario_text(text, "s.yaml")
    problem = caught.value.problems[0]
    assert problem.file == "s.yaml"
    if words:
        assert (problem.line, problem.column) == where, str(caught.value)
        assert words in str(caught.value)


def test_an_unreadable_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
