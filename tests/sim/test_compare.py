"""`stagewise compare`: every strategy on the default scenario, the numbers against the words."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stagewise.cli import advise_report
from stagewise.cli.main import app
from stagewise.sim import compare, default_scenario

runner = CliRunner()


@pytest.mark.timeout(180)
def test_twenty_seeds_of_the_default_scenario_take_under_a_minute() -> None:
    started = time.perf_counter()
    comparison = compare(default_scenario(), seeds=20)
    wall = time.perf_counter() - started
    assert wall < 60, wall
    n = {name: s.numbers for name, s in comparison.summaries.items()}
    # what the numbers must show whatever the words say
    assert n["full"]["bad_users"] == max(v["bad_users"] or 0 for v in n.values())
    assert n["full"]["peak_extra"] == 0 and n["phased"]["peak_extra"] == 0
    assert n["blue-green"]["peak_extra"] == default_scenario().fleet.replicas
    assert n["full"]["downtime_good_s"] and n["full"]["downtime_good_s"] > 0
    for name in ("phased", "canary", "blue-green"):
        assert comparison.summaries[name].deciders() == {"analysis": 20}
        assert (n[name]["bad_requests"] or 0) < (n["full"]["bad_requests"] or 0) / 100
    findings = advise_report.findings(comparison)
    assert len(findings) >= 8
    for finding in findings:
        assert finding.measured
        if not finding.holds:
            assert finding.why, finding.words  # a disagreement always says why


@pytest.mark.timeout(120)
def test_the_command_prints_json_and_writes_a_report(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    result = runner.invoke(app, ["compare", "--seeds", "2", "--json", "--report", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["strategies"]) == {"full", "phased", "canary", "blue-green"}
    assert data["seeds"] == 2 and data["findings"]
    for numbers in data["strategies"].values():
        assert {"bad_requests", "bad_users", "rollback_s", "rollout_s", "peak_extra", "steps", "parts",
                "downtime_good_s", "best_for"} <= set(numbers)
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "disagrees" in page or "holds" in page
    assert "a person" in page  # the report says how strategies without analysis are decided


@pytest.mark.timeout(60)
def test_a_bad_scenario_exits_2_with_its_position(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("fleet:\n  replicas: -1\n")
    result = runner.invoke(app, ["compare", "--scenario", str(scenario)])
    assert result.exit_code == 2
    assert f"{scenario}:2:13" in result.output
    result = runner.invoke(app, ["compare", "--seeds", "0"])
    assert result.exit_code == 2
