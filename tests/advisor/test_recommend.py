"""`stagewise recommend`: the four cases of the guide, reasons that name their inputs, starter specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stagewise.advisor import Inputs, inputs_from_text, recommend, starter_spec
from stagewise.cli.main import app
from stagewise.errors import SpecError
from stagewise.spec import load_spec_text

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()

CASES = [
    (["--zero-downtime", "--spare-capacity"], "blue-green", ["--zero-downtime", "--spare-capacity"]),
    (["--user-impact", "high", "--risk-tolerance", "low", "--metrics", "--no-spare-capacity"], "canary",
     ["--user-impact high", "--risk-tolerance low", "--metrics"]),
    (["--complexity", "low", "--user-impact", "low", "--risk-tolerance", "high"], "full",
     ["--complexity low", "--user-impact low", "--risk-tolerance high"]),
    (["--users", "1000000", "--no-metrics"], "phased", ["--users 1,000,000", "--no-metrics"]),
]


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["recommend", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(("flags", "winner", "named"), CASES)
def test_the_four_cases_come_out_as_the_guide_says(flags: list[str], winner: str, named: list[str]) -> None:
    code, output = run(*flags, "--json")
    assert code == 0, output
    data = json.loads(output)
    assert set(data) == {"recommendation", "ranking"}
    assert data["recommendation"] == winner
    assert data["ranking"][0]["strategy"] == winner
    assert all(set(r) == {"strategy", "score", "reasons", "ruled_out"} for r in data["ranking"])
    assert sorted(r["strategy"] for r in data["ranking"]) == ["blue-green", "canary", "full", "phased"]
    top = " ".join(data["ranking"][0]["reasons"])
    for flag in named:
        assert flag in top, (flag, top)


def test_constraints_rule_out_and_weaken() -> None:
    no_room = recommend(Inputs(spare_capacity=False, metrics=True))
    bg = next(r for r in no_room.ranking if r.strategy == "blue-green")
    assert bg.ruled_out and "--no-spare-capacity" in bg.reasons[0]
    assert no_room.ranking[-1].strategy == "blue-green"
    blind = recommend(Inputs(metrics=False))
    canary = next(r for r in blind.ranking if r.strategy == "canary")
    assert not canary.ruled_out and any("weakened" in r and "--no-metrics" in r for r in canary.reasons)
    down = recommend(Inputs(zero_downtime=True))
    assert next(r for r in down.ranking if r.strategy == "full").ruled_out


@pytest.mark.parametrize("flags", [[], ["--user-impact", "high", "--metrics"], ["--no-metrics", "--users", "50"]])
def test_a_schema_change_brings_expand_migrate_contract_whatever_the_strategy(flags: list[str]) -> None:
    code, output = run(*flags, "--schema-change", "--json")
    assert code == 0
    for ranked in json.loads(output)["ranking"]:
        text = " ".join(ranked["reasons"])
        assert "expand" in text.lower() and "migrate" in text.lower() and "contract" in text.lower()


@pytest.mark.parametrize(("flag", "value"), [("--risk-tolerance", "extreme"), ("--complexity", "huge"),
                                              ("--user-impact", "1"), ("--rollback", "fast")])
def test_an_invalid_value_exits_2_naming_the_choices(flag: str, value: str) -> None:
    code, output = run(flag, value)
    assert code == 2
    for choice in ("low", "medium", "high"):
        assert choice in output


def test_write_gives_a_starter_spec_that_validates(tmp_path: Path) -> None:
    target = tmp_path / "starter.yaml"
    code, output = run("--users", "1000000", "--no-metrics", "--write", str(target))
    assert code == 0, output
    spec = load_spec_text(target.read_text(), str(target))
    assert spec.spec.strategy.name == "phased"
    assert spec.spec.strategy.phased is not None and spec.spec.strategy.phased.cohorts is not None
    code, output = run("--write", str(target))
    assert code == 2 and "exists" in output
    assert run("--write", str(target), "--force")[0] == 0
    result = runner.invoke(app, ["validate", str(target)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("strategy", ["full", "phased", "canary", "blue-green"])
@pytest.mark.parametrize("inputs", [
    Inputs(), Inputs(metrics=False), Inputs(metrics=True, users=2_000_000, risk_tolerance="low"),
    Inputs(rollback="low", schema_change=True, replicas=7, user_impact="high"),
])
def test_every_starter_spec_loads(strategy: str, inputs: Inputs) -> None:
    spec = load_spec_text(starter_spec(strategy, inputs))  # type: ignore[arg-type]
    assert spec.spec.strategy.name == strategy
    assert spec.spec.replicas == (inputs.replicas or 4)


def test_inputs_come_from_a_profile_or_a_service_spec(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("userImpact: high\nriskTolerance: low\nmetrics: true\nspareCapacity: false\n")
    code, output = run("--from", str(profile), "--json")
    assert code == 0 and json.loads(output)["recommendation"] == "canary"
    code, output = run("--from", str(profile), "--spare-capacity", "--zero-downtime", "--json")
    assert json.loads(output)["recommendation"] == "blue-green"  # flags override the file

    service = tmp_path / "service.yaml"
    text = starter_spec("canary", Inputs(replicas=6)).replace(
        "  name: my-service\n", "  name: my-service\n  labels: {stagewise.dev/users: '2000000'}\n")
    service.write_text(text)
    inputs = inputs_from_text(text, str(service))
    assert inputs.metrics is True and inputs.replicas == 6 and inputs.users == 2_000_000


def test_a_bad_profile_is_reported_where_it_is(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("riskTolerance: extreme\n")
    code, output = run("--from", str(profile))
    assert code == 2
    assert f"{profile}:1:16" in output and "'low', 'medium', 'high'" in output.replace('"', "'")
    with pytest.raises(SpecError):
        inputs_from_text("users: -5\n")
