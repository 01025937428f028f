"""The replay folds blocks into the judges' processes; it must decide exactly as the judge looked at per line.

The reference is the plain loop a controller would run: the judge consulted
after every request with a one-request increment. The replay must fail on
the same line with the same evidence (e-values to rounding), and end with the
same verdict when nothing is detected — including recordings with long runs
of one release alone (held, then dropped past PENDING_MAX).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stagewise.analysis.judges import judge
from stagewise.analysis.judges.replay import Request, block_changes, replay_requests, replay_values
from stagewise.analysis.judges.sequential import PENDING_MAX
from stagewise.analysis.judges.sequential_latency import rungs
from stagewise.cli.main import app
from stagewise.core.judge_state import JudgeState
from stagewise.core.spec import AnalysisTemplate, PrometheusTemplate, RouterTemplate
from stagewise.core.stats import LATENCY_BOUNDS_MS, ReleaseStats, bucket_of
from stagewise.core.verdict import Outcome, Verdict

pytestmark = pytest.mark.timeout(120)


def recording(seed: int, *, n: int, error_ratio: float = 1.0, shift_ms: float = 0.0, share: float = 0.5,
              lonely_run: int = 0) -> list[Request]:
    """Requests in time order; `lonely_run` baseline-only requests in the middle (no candidate for a while)."""
    rng = random.Random(seed)
    rows: list[Request] = []
    t = 0.0
    for i in range(n):
        t += rng.expovariate(50)
        arm = 0 if n // 3 <= i < n // 3 + lonely_run else int(rng.random() < share)
        status = 500 if rng.random() < 0.02 * (error_ratio if arm else 1.0) else 200
        latency = rng.lognormvariate(math.log(30), 0.5) + (shift_ms if arm else 0.0)
        rows.append((round(t, 4), arm, status, round(latency, 3)))
    return rows


def per_line(rows: list[Request], template: AnalysisTemplate) -> dict[str, Any]:
    """The judge consulted after every request, as the controller would if it looked that often."""
    state: JudgeState | None = None
    start = rows[0][0]
    verdict = Verdict(outcome=Outcome.RUNNING)
    for i, (t, arm, status, latency) in enumerate(rows, start=1):
        buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        buckets[bucket_of(latency)] = 1
        one = ReleaseStats(requests=1, errors=int(status >= 500), latency_buckets=buckets)
        b, c = (one, ReleaseStats()) if arm == 0 else (ReleaseStats(), one)
        state, verdict = judge(template, state, b, c, elapsed=t - start, duration=None)
        if verdict.decided:
            return {"verdict": verdict.outcome.value, "at": (t, i), "evidence": verdict.evidence}
    end = rows[-1][0] - start
    _, verdict = judge(template, state, ReleaseStats(), ReleaseStats(), elapsed=end, duration=end)
    return {"verdict": verdict.outcome.value, "at": (rows[-1][0], len(rows)), "evidence": verdict.evidence}


def same_evidence(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], float):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("metric", ["error-rate", "latency"])
@pytest.mark.parametrize(("case", "kwargs"), [
    ("A/A", {}),
    ("regression", {"error_ratio": 3.0, "shift_ms": 6.0}),
    ("small split", {"error_ratio": 2.5, "shift_ms": 4.0, "share": 0.08}),
    ("baseline alone for a while", {"lonely_run": PENDING_MAX + 300}),
])
def test_the_replay_decides_on_the_same_line_as_the_judge_looked_at_per_line(
    metric: str, case: str, kwargs: dict[str, Any]
) -> None:
    n = 12_000 if case == "baseline alone for a while" else 5_000
    for seed in range(3):
        rows = recording(seed, n=n, **kwargs)
        template = RouterTemplate(metric=metric)
        expected = per_line(rows, template)
        got = replay_requests(iter(rows), template)
        assert (got["verdict"], (got["decided_at"]["t"], got["decided_at"]["requests"])) == (
            expected["verdict"], expected["at"]), case
        same_evidence(got["evidence"], expected["evidence"])


def test_block_changes_counts_slow_requests_per_rung_from_the_slowest_bucket_down() -> None:
    ladder = rungs(5.0)
    window = [{bucket_of(4.0): 1, bucket_of(40.0): 2}, {bucket_of(12.0): 1, bucket_of(40.0): 1}]
    prefix, changes = block_changes(window, ladder)
    assert prefix == 0  # the 4 ms request is below the first rung: no rung has every request slow
    dense = {r: (sum(n for q, n in window[0].items() if q > ladder[r]), sum(n for q, n in window[1].items()
                                                                              if q > ladder[r]))
             for r in range(len(ladder))}
    assert {r: (s_b, s_c) for r, s_b, s_c in changes} == {
        r: v for r, v in dense.items() if 0 < sum(v) < 5}


def test_gauge_samples_pair_per_scrape_and_several_instances_give_their_mean() -> None:
    t = PrometheusTemplate(provider="prometheus", address="recording", query="recording", metric="value",
                           bounds={"min": 0, "max": 100}, min_samples=2)
    rows = [(0.0, 0, 10.0), (0.0, 0, 20.0), (0.0, 1, 30.0),  # a scrape: two baseline instances, one candidate
            (15.0, 0, 10.0), (16.0, 1, 50.0),  # interleaved: the pair closes when both have a value
            (30.0, 0, 99.0)]  # left alone at the end: counted as a sample, never paired
    out = replay_values(iter(rows), t)
    assert out["evidence"]["pairs"] == 2 and out["evidence"]["samples"] == {"baseline": 3, "candidate": 2}
    assert out["evidence"]["mean"] == {"baseline": 12.5, "candidate": 40.0}
    assert out["verdict"] == "Successful" and out["decided_at"] == {"t": 30.0, "requests": 6}


def write_values(path: Path, *, shift: float, n: int = 400, seed: int = 4) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            for release, factor in (("baseline", 1.0), ("candidate", 1.0 + shift)):
                value = (0.4 + 0.1 * math.sin(i / 30) + rng.gauss(0, 0.03)) * factor
                f.write(json.dumps({"t": i * 15, "release": release, "value": round(value, 4)}) + "\n")
    return path


def analyze(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    result = CliRunner().invoke(app, ["analyze", *args, "--json"])
    body = json.loads(result.stdout) if result.exit_code == 0 else None
    return result.exit_code, body, result.stderr


def test_analyze_a_gauge_recording_finds_the_shift_and_passes_an_a_a_one(tmp_path: Path) -> None:
    bad = write_values(tmp_path / "bad.jsonl", shift=0.2)
    code, body, _ = analyze("--input", str(bad), "--metric", "value", "--bounds", "0:1")
    assert code == 0 and body is not None and body["verdict"] == "Failed", body
    assert set(body) >= {"verdict", "message", "judge", "metric", "decided_at", "evidence"}
    assert body["metric"] == "value" and 0 < body["decided_at"]["requests"] < 800
    assert "higher than the baseline's" in body["message"]
    code, body, _ = analyze("--input", str(bad), "--metric", "value", "--bounds", "0:1", "--direction", "decrease")
    assert code == 0 and body is not None and body["verdict"] == "Successful"
    code, body, _ = analyze("--input", str(bad), "--metric", "value", "--bounds", "0:1", "--margin", "0.5")
    assert code == 0 and body is not None and body["verdict"] == "Successful"
    good = write_values(tmp_path / "good.jsonl", shift=0.0)
    code, body, _ = analyze("--input", str(good), "--metric", "value", "--bounds", "0:1", "--direction", "either",
                            "--progress")
    assert code == 0 and body is not None and body["verdict"] == "Successful" and body["evidence"]["pairs"] == 400


@pytest.mark.parametrize(("args", "why"), [
    (["--metric", "value"], "needs bounds"),
    (["--metric", "value", "--bounds", "1"], "expected MIN:MAX"),
    (["--metric", "value", "--bounds", "0:1", "--judge", "mannwhitney"], "not mannwhitney"),
    (["--metric", "value", "--judge", "threshold"], "needs --max or --min"),
    (["--metric", "error-rate", "--direction", "decrease"], "direction is for metric: value"),
])
def test_bad_value_options_exit_2_saying_what_is_wrong(tmp_path: Path, args: list[str], why: str) -> None:
    path = write_values(tmp_path / "v.jsonl", shift=0.0, n=3)
    code, _, stderr = analyze("--input", str(path), *args)
    assert code == 2 and why in stderr, stderr


def test_a_malformed_gauge_line_exits_2_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    path.write_text('{"t": 0, "release": "baseline", "value": 1}\n{"t": 0, "release": "candidate", "value": "x"}\n')
    code, _, stderr = analyze("--input", str(path), "--metric", "value", "--bounds", "0:10")
    assert code == 2 and "line 2: value must be a finite number" in stderr
