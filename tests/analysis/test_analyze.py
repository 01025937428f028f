"""`stagewise analyze`: replaying recorded requests through every judge, and refusing bad input."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stagewise.analysis.judges import judge
from stagewise.analysis.judges.sequential import PENDING_INCREMENT_MAX, gather
from stagewise.cli.main import app
from stagewise.core.judge_state import JudgeState
from stagewise.core.spec import RouterTemplate
from stagewise.core.stats import ReleaseStats

pytestmark = pytest.mark.timeout(60)


def record(path: Path, *, n: int = 6000, bad_errors: float = 1.0, slow_tail: bool = False, seed: int = 1) -> Path:
    rng = random.Random(seed)
    t = 0.0
    with path.open("w") as f:
        for _ in range(n):
            t += rng.expovariate(20)
            arm = "candidate" if rng.random() < 0.5 else "baseline"
            rate = 0.02 * (bad_errors if arm == "candidate" else 1.0)
            latency = rng.lognormvariate(math.log(40), 0.4)
            if slow_tail and arm == "candidate" and rng.random() < 0.05:
                latency += 300
            f.write(json.dumps({"t": round(t, 4), "release": arm, "status": 503 if rng.random() < rate else 200,
                                "latency_ms": round(latency, 3)}) + "\n")
    return path


def analyze(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    result = CliRunner().invoke(app, ["analyze", *args, "--json"])
    try:
        body = json.loads(result.stdout)
    except ValueError:
        body = None
    return result.exit_code, body, result.stderr if result.stderr_bytes is not None else ""


@pytest.mark.parametrize(("judge_name", "metric", "extra"), [
    ("sequential", "error-rate", []),
    ("sequential", "latency", []),
    ("mannwhitney", "error-rate", ["--interval", "30s"]),
    ("threshold", "error-rate", ["--interval", "30s", "--max", "0.05"]),
])
def test_every_judge_finds_a_bad_recording_and_says_when(tmp_path: Path, judge_name: str, metric: str,
                                                         extra: list[str]) -> None:
    bad = record(tmp_path / "bad.jsonl", bad_errors=5.0, slow_tail=True)
    code, body, _ = analyze("--input", str(bad), "--judge", judge_name, "--metric", metric, *extra)
    assert code == 0 and body is not None
    assert set(body) >= {"verdict", "decided_at", "evidence"} and set(body["decided_at"]) == {"t", "requests"}
    assert body["verdict"] == "Failed", body["message"]
    assert 0 < body["decided_at"]["requests"] < 6000 and body["evidence"]["judge"] == judge_name
    if judge_name != "sequential":  # consulted at its interval: decisions fall on interval boundaries
        assert (body["decided_at"]["t"] - json.loads(bad.read_text().splitlines()[0])["t"]) % 30 == pytest.approx(0)


@pytest.mark.parametrize("judge_name", ["sequential", "mannwhitney", "threshold"])
def test_a_good_recording_ends_successful_and_a_tiny_one_no_data(tmp_path: Path, judge_name: str) -> None:
    good = record(tmp_path / "good.jsonl", n=3000)
    code, body, _ = analyze("--input", str(good), "--judge", judge_name, "--interval", "30s", "--max", "0.1")
    assert code == 0 and body is not None and body["verdict"] == "Successful", body["message"]
    assert body["decided_at"]["requests"] == 3000
    tiny = record(tmp_path / "tiny.jsonl", n=30)
    code, body, _ = analyze("--input", str(tiny), "--judge", judge_name, "--max", "0.1")
    assert code == 0 and body is not None and body["verdict"] == "NoData"
    assert "requests needed" in body["message"] or "no value" in body["message"]


@pytest.mark.parametrize(("line", "why"), [
    ("{not json", "not JSON"),
    ('{"t": 1, "release": "canary", "status": 200, "latency_ms": 1}', 'release must be "baseline" or "candidate"'),
    ('{"t": 1, "release": "baseline", "status": 200}', "missing latency_ms"),
    ('{"t": 0.5, "release": "baseline", "status": 200, "latency_ms": 1}', "before the previous line"),
    ('{"t": 2, "release": "baseline", "status": "200", "latency_ms": 1}', "status must be an HTTP status"),
    ('[1, 2]', "expected an object"),
])
def test_a_malformed_line_exits_2_naming_the_line(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"t": 1, "release": "baseline", "status": 200, "latency_ms": 3}\n'
                    '{"t": 1.5, "release": "candidate", "status": 500, "latency_ms": 4}\n' + line + "\n")
    result = CliRunner().invoke(app, ["analyze", "--input", str(path)])
    assert result.exit_code == 2
    assert "line 3" in result.stderr and why in result.stderr
    missing = CliRunner().invoke(app, ["analyze", "--input", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr


# ---- looking after every request ------------------------------------------------------------------

def test_one_request_increments_are_held_until_the_other_arm_shows_up() -> None:
    block, held = gather([], [1, 0, 1, 0])  # a baseline request that failed
    assert block is None and held == [1, 0, 1, 0]
    block, held = gather(held, [1, 0, 0, 0])
    assert block is None and held == [2, 0, 1, 0]
    block, held = gather(held, [0, 1, 0, 1])
    assert block == [2, 1, 1, 1] and held == []
    # a big one-sided increment means no concurrent baseline: dropped, with what was held
    assert gather([3, 0, 1, 0], [0, PENDING_INCREMENT_MAX + 1, 0, 9]) == (None, [])


def test_sequential_looked_at_after_every_request_still_decides() -> None:
    rng = random.Random(2)
    template = RouterTemplate()
    state: JudgeState | None = None
    for i in range(1, 20_001):
        candidate = rng.random() < 0.5
        failed = rng.random() < (0.10 if candidate else 0.02)
        one = ReleaseStats(requests=1, errors=int(failed))
        baseline, candidate_inc = (ReleaseStats(), one) if candidate else (one, ReleaseStats())
        state, verdict = judge(template, state, baseline, candidate_inc, elapsed=i / 20, duration=None)
        if verdict.decided:
            break
    assert verdict.outcome.value == "Failed" and i < 3000
    assert verdict.evidence["errors"]["candidate"] > verdict.evidence["errors"]["baseline"]
