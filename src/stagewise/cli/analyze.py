"""`stagewise analyze`: replay recorded requests through a judge, offline.

Each input line is one request, in time order:

    {"t": 12.5, "release": "baseline", "status": 200, "latency_ms": 31.2}

The replay consults the judge at the judge's own cadence — after every line
for `sequential`, once per `--interval` for `threshold` and `mannwhitney` —
and stops at the first Failed or Successful. At the end of the input without
a decision it asks the judge for the verdict of a run that ends there:
Successful when nothing was detected, NoData with too little data. So a
recording of an incident shows which judge would have caught it, and when.

Exit 0 whatever the verdict; 2 for bad input, with the line number.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.console import Console

from stagewise.analysis.judges import judge
from stagewise.core.durations import parse_duration
from stagewise.core.judge_state import JudgeState
from stagewise.core.spec import AnalysisTemplate, RouterTemplate
from stagewise.core.stats import LATENCY_BOUNDS_MS, ReleaseStats, bucket_of
from stagewise.core.verdict import Outcome, Verdict
from stagewise.errors import ReplayInputError

EXIT_OK, EXIT_BAD_INPUT = 0, 2
ARMS = ("baseline", "candidate")
FLAGGER_DEFAULTS = {"error-rate": 0.01, "latency": 500.0}
"""threshold without --max: Flagger's builtin checks (success rate ≥ 99 %, request duration ≤ 500 ms)."""


@dataclass
class Window:
    """Requests since the judge was last consulted, per arm."""

    requests: list[int] = field(default_factory=lambda: [0, 0])
    errors: list[int] = field(default_factory=lambda: [0, 0])
    buckets: list[list[int]] = field(default_factory=lambda: [[0] * (len(LATENCY_BOUNDS_MS) + 1) for _ in ARMS])
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def add(self, arm: int, status: int, latency_ms: float) -> None:
        self.requests[arm] += 1
        self.errors[arm] += status >= 500
        self.buckets[arm][bucket_of(latency_ms)] += 1
        self.sums[arm] += latency_ms

    def stats(self, arm: int) -> ReleaseStats:
        return ReleaseStats(requests=self.requests[arm], errors=self.errors[arm],
                            latency_buckets=self.buckets[arm], latency_sum_ms=self.sums[arm])


def parse_line(text: str, number: int, previous_t: float | None) -> tuple[float, int, int, float]:
    """(t, arm, status, latency_ms) of one line; ReplayInputError naming the line otherwise."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplayInputError(f"line {number}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise ReplayInputError(f"line {number}: expected an object such as "
                       '{"t": 1.5, "release": "candidate", "status": 200, "latency_ms": 12.3}')
    missing = [k for k in ("t", "release", "status", "latency_ms") if k not in row]
    if missing:
        raise ReplayInputError(f"line {number}: missing {', '.join(missing)}")
    t, release, status, latency = row["t"], row["release"], row["status"], row["latency_ms"]
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise ReplayInputError(f"line {number}: t must be a number of seconds, got {t!r}")
    if release not in ARMS:
        raise ReplayInputError(f'line {number}: release must be "baseline" or "candidate", got {release!r}')
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ReplayInputError(f"line {number}: status must be an HTTP status (100-599), got {status!r}")
    if isinstance(latency, bool) or not isinstance(latency, int | float) or not 0 <= latency < math.inf:
        raise ReplayInputError(f"line {number}: latency_ms must be a number ≥ 0, got {latency!r}")
    if previous_t is not None and t < previous_t:
        raise ReplayInputError(f"line {number}: t {t:g} is before the previous line's {previous_t:g} "
                       "(lines must be in time order)")
    return float(t), ARMS.index(release), status, float(latency)


def replay(lines: Any, template: AnalysisTemplate) -> dict[str, Any]:
    """Feed the requests in `lines` (an iterable of text lines) to the judge; the result as documented."""
    sequential = template.judge == "sequential"
    step = template.interval or 60.0
    state: JudgeState | None = None
    window = Window()
    start: float | None = None
    last_t: float | None = None
    consumed = 0
    boundary = step
    verdict = Verdict(outcome=Outcome.RUNNING)

    def consult(elapsed: float, duration: float | None) -> Verdict:
        nonlocal state, window
        state, result = judge(template, state, window.stats(0), window.stats(1), elapsed=elapsed, duration=duration)
        window = Window()
        return result

    def decided(at: float) -> dict[str, Any]:
        return _result(template, verdict, at, consumed)

    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        t, arm, status, latency = parse_line(text, number, last_t)
        start = t if start is None else start
        last_t = t
        elapsed = t - start
        if not sequential:
            while elapsed >= boundary:
                verdict = consult(boundary, None)
                if verdict.outcome in (Outcome.FAILED, Outcome.SUCCESSFUL):
                    return decided(start + boundary)
                boundary += step
        window.add(arm, status, latency)
        consumed += 1
        if sequential:
            verdict = consult(elapsed, None)
            if verdict.outcome in (Outcome.FAILED, Outcome.SUCCESSFUL):
                return decided(t)
    end = 0.0 if last_t is None or start is None else last_t - start
    verdict = consult(end, end)
    return decided(end + (start or 0.0))


def _result(template: AnalysisTemplate, verdict: Verdict, t: float, requests: int) -> dict[str, Any]:
    return {
        "verdict": verdict.outcome.value,
        "message": verdict.message,
        "judge": template.judge,
        "metric": template.metric,
        "decided_at": {"t": t, "requests": requests},
        "evidence": verdict.evidence,
    }


def analyze(
    input_file: Annotated[Path, typer.Option("--input", help="JSON lines, one request each, in time order.")],
    judge_name: Annotated[Literal["sequential", "threshold", "mannwhitney"], typer.Option("--judge")] = "sequential",
    metric: Annotated[Literal["error-rate", "latency"], typer.Option("--metric")] = "error-rate",
    alpha: Annotated[float | None, typer.Option(
        "--alpha", help="False-alarm rate (mannwhitney: 1 − confidence).")] = None,
    interval: Annotated[str, typer.Option("--interval", help="threshold, mannwhitney: time between checks.")] = "60s",
    maximum: Annotated[float | None, typer.Option(
        "--max", help="threshold: highest acceptable error rate (fraction) or latency (ms).")] = None,
    minimum: Annotated[float | None, typer.Option("--min", help="threshold: lowest acceptable value.")] = None,
    margin: Annotated[float | None, typer.Option("--margin", help="sequential: allowed relative increase.")] = None,
    failure_limit: Annotated[int, typer.Option("--failure-limit", help="Failed checks that fail.")] = 1,
    min_requests: Annotated[int, typer.Option("--min-requests", help="Requests per release to pass.")] = 50,
    no_data: Annotated[Literal["wait", "fail", "pass"], typer.Option("--no-data")] = "wait",
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON result.")] = False,
) -> None:
    """Replay recorded requests through a judge, offline; print the verdict and when it came."""
    err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
    fields: dict[str, Any] = {"judge": judge_name, "metric": metric, "failureLimit": failure_limit,
                              "minRequests": min_requests, "noData": no_data}
    try:
        fields["interval"] = parse_duration(interval)
    except ValueError as exc:
        _bad(err, f"--interval: {exc}")
    if alpha is not None:
        fields["alpha"] = alpha
    if margin is not None:
        fields["margin"] = margin
    if judge_name == "threshold":
        high = maximum if maximum is not None or minimum is not None else FLAGGER_DEFAULTS[metric]
        fields["thresholdRange"] = {"min": minimum, "max": high}
    try:
        template = RouterTemplate.model_validate(fields)
    except ValidationError as exc:
        _bad(err, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()))
    try:
        with input_file.open(encoding="utf-8", errors="strict") as lines:
            result = replay(lines, template)
    except OSError as exc:
        _bad(err, f"cannot read {input_file}: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        _bad(err, f"{input_file}: not UTF-8 text ({exc.reason})")
    except ReplayInputError as exc:
        _bad(err, f"{input_file}: {exc}")
    text = json.dumps(_clean(result), indent=None if as_json else 2, ensure_ascii=False, allow_nan=False)
    print(text)  # plain print: the JSON must not be wrapped or styled
    raise typer.Exit(EXIT_OK)


def _clean(value: Any) -> Any:
    """JSON without NaN or infinities (a latency in the overflow bucket is "more than any bound": null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _bad(err: Console, message: str) -> Any:
    err.print(f"error: {message}", highlight=False, markup=False)
    raise typer.Exit(EXIT_BAD_INPUT)
