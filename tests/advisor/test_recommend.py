"""`stagewise recommend`: the four cases of the guide, reasons that name their inputs, starter specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stagewise.advisor import WORDS, Inputs, inputs_from_text, recommend, starter_spec
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
    assert set(data) == {"recommendation", "ranking", "tie"}
    assert data["recommendation"] == winner
    assert data["ranking"][0]["strategy"] == winner
    assert all(set(r) == {"strategy", "score", "reasons", "ruled_out"} for r in data["ranking"])
    assert sorted(r["strategy"] for r in data["ranking"]) == ["blue-green", "canary", "full", "phased"]
    top = " ".join(data["ranking"][0]["reasons"])
    for flag in named:
        assert flag in top, (flag, top)


# Each row of the delivery-strategies guide's comparison table, as written there (and held in `WORDS`),
# with the inputs of a team that row describes: the row's risk level is the risk the team tolerates (the
# guide's "very low" is the lowest there is: low); its complexity is the system's; its rollback speed is
# what the team needs the strategy to give, so an instant or fast one answers a team that cannot roll
# back well by itself (--rollback low) and a slow one a team that can (--rollback high); "best for"
# becomes the fact it names.
SEED_ROWS = [
    ("Phased", "Low", "Medium", "Medium", "Large user bases",
     ["--risk-tolerance", "low", "--complexity", "medium", "--rollback", "medium", "--users", "1000000"], "phased"),
    ("Full", "High", "Low", "Slow", "Small systems",
     ["--risk-tolerance", "high", "--complexity", "low", "--rollback", "high"], "full"),
    ("Canary", "Low", "High", "Fast", "Critical systems",
     ["--risk-tolerance", "low", "--complexity", "high", "--rollback", "low", "--user-impact", "high"], "canary"),
    ("Blue-Green", "Very Low", "High", "Instant", "Zero-downtime needs",
     ["--risk-tolerance", "low", "--complexity", "high", "--rollback", "low", "--zero-downtime"], "blue-green"),
]


@pytest.mark.parametrize(("row", "risk", "complexity", "rollback", "best_for", "flags", "winner"), SEED_ROWS,
                         ids=[r[0] for r in SEED_ROWS])
def test_each_row_of_the_guides_table_recommends_its_strategy(
    row: str, risk: str, complexity: str, rollback: str, best_for: str, flags: list[str], winner: str
) -> None:
    words = WORDS[winner]  # type: ignore[index]
    assert (words.risk, words.complexity, words.rollback, words.best_for) == tuple(
        w.lower() for w in (risk, complexity, rollback, best_for))
    code, output = run(*flags, "--json")
    assert code == 0, output
    data = json.loads(output)
    assert data["recommendation"] == winner, data["ranking"]
    assert data["tie"] is None, data["tie"]


def test_a_tie_is_decided_by_risk_tolerance_and_said_so() -> None:
    """Canary and blue-green both reach 100 here; with a low risk tolerance the very-low-risk one wins."""
    flags = ["--zero-downtime", "--spare-capacity", "--metrics", "--risk-tolerance", "low", "--complexity", "high",
             "--user-impact", "high", "--rollback", "high"]
    code, output = run(*flags, "--json")
    assert code == 0, output
    data = json.loads(output)
    assert [(r["strategy"], r["score"]) for r in data["ranking"][:2]] == [("blue-green", 100), ("canary", 100)]
    assert data["recommendation"] == "blue-green"
    assert data["tie"]["strategies"] == ["blue-green", "canary"] and data["tie"]["score"] == 100
    assert data["tie"]["decided_by"] == "--risk-tolerance low"
    assert "blue-green very low risk, canary low risk" in data["tie"]["rule"]
    assert any(r.startswith("first of a tie:") for r in data["ranking"][0]["reasons"])
    code, text = run(*flags)
    assert code == 0 and "A tie decided it: blue-green and canary tie at 100" in " ".join(text.split())


def test_ties_never_fall_back_on_list_order() -> None:
    """Any two strategies tied on score are put in an order the rule gives, whatever the inputs."""
    from stagewise.advisor.rules import tie_order

    for tolerance in ("low", "medium", "high"):
        inputs = Inputs(risk_tolerance=tolerance)  # type: ignore[arg-type]
        keys = [tie_order(inputs, s) for s in ("full", "phased", "canary", "blue-green")]
        assert len(set(keys)) == 4, (tolerance, keys)


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
