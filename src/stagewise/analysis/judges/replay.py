"""Replay a recording through a judge at the judge's own cadence — fast enough for an incident's million requests.

`stagewise analyze` reads the lines; this module decides. A sequential judge
is consulted after every request, as if the controller looked that often: a
one-request increment is held until the other release has a request (see
`sequential.gather`), so the e-processes move only when such a *block*
closes. The replay therefore cuts the recording into exactly those blocks and
folds each one into the judge's own process (`ErrorRateProcess`,
`LatencyProcess`, the value judge's `Tally`) — the very code the judge runs,
with the same numbers, just without building a verdict for every line. A
verdict is built when the e-value reaches its bound (Failed, at that line)
and at the end of the recording (the verdict of a run ending there). A block
of one release alone longer than `sequential.PENDING_MAX` is dropped, as the
judge drops it.

`threshold` and `mannwhitney` are consulted once per `interval` of the
recording's time, with what arrived since.

Gauge samples pair up by time: the values of one release read at one `t` (a
scrape; several instances give their mean) pair with the other release's
values of the same scrape, or of the next scrapes until both releases have
one — the pairing depends on which release a line names and when, never on
its value.

Memory: the judges' bounded states and one block; nothing grows with the
recording's length. Pure: rows in, a result out.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stagewise.analysis.judges import judge
from stagewise.analysis.judges.sequential import PENDING_MAX, ErrorRateProcess, error_rate_rho0
from stagewise.analysis.judges.sequential_latency import LatencyProcess, latency_settings
from stagewise.analysis.judges.sequential_value import Tally, conclude, fresh_state
from stagewise.core.judge_state import JudgeState
from stagewise.core.spec import AnalysisTemplate
from stagewise.core.stats import LATENCY_BOUNDS_MS, ReleaseStats, bucket_of
from stagewise.core.verdict import Outcome, Verdict

Request = tuple[float, int, int, float]
"""One recorded request: t (seconds), arm (0 baseline, 1 candidate), HTTP status, latency in ms."""
Sample = tuple[float, int, float]
"""One recorded gauge sample: t (seconds), arm, value."""
EMPTY = ReleaseStats()


def result(template: AnalysisTemplate, verdict: Verdict, t: float, lines: int) -> dict[str, Any]:
    """What `stagewise analyze` prints: the verdict, when it came (time and lines read), and the evidence."""
    return {
        "verdict": verdict.outcome.value,
        "message": verdict.message,
        "judge": template.judge,
        "metric": template.metric,
        "decided_at": {"t": t, "requests": lines},
        "evidence": verdict.evidence,
    }


def replay_requests(rows: Iterable[Request], template: AnalysisTemplate) -> dict[str, Any]:
    """Feed recorded requests to the template's judge; the result as `result` says."""
    if template.judge != "sequential":
        return _by_interval(rows, template)
    if template.metric == "latency":
        return _sequential_latency(rows, template)
    return _sequential_errors(rows, template)


def _final(template: AnalysisTemplate, state: JudgeState, start: float | None, last: float,
           lines: int) -> dict[str, Any]:
    """The verdict of a run that ends with the recording."""
    end = 0.0 if start is None else last - start
    _, verdict = judge(template, state, EMPTY, EMPTY, elapsed=end, duration=end)
    return result(template, verdict, end + (start or 0.0), lines)


def _failed(template: AnalysisTemplate, state: JudgeState, t: float, start: float, lines: int) -> dict[str, Any]:
    _, verdict = judge(template, state, EMPTY, EMPTY, elapsed=t - start, duration=None)
    return result(template, verdict, t, lines)


def _sequential_errors(rows: Iterable[Request], template: AnalysisTemplate) -> dict[str, Any]:
    process = ErrorRateProcess(error_rate_rho0(template))
    bound = math.log(1.0 / template.alpha)
    n, e = [0, 0], [0, 0]
    start: float | None = None
    t, lines = 0.0, 0
    for t, arm, status, _ in rows:
        start = t if start is None else start
        lines += 1
        n[arm] += 1
        e[arm] += status >= 500
        if n[1 - arm]:
            process.add_block(n[0], e[0], n[1], e[1])
            n, e = [0, 0], [0, 0]
            if process.log_e >= bound:
                return _failed(template, process.state(), t, start, lines)
        elif n[arm] > PENDING_MAX:
            process.count(n[0], e[0], n[1], e[1])  # no other release for this long: dropped, as the judge does
            n, e = [0, 0], [0, 0]
    process.count(n[0], e[0], n[1], e[1])
    return _final(template, process.state(), start, t, lines)


def block_changes(window: list[dict[int, int]], ladder: Sequence[int]) -> tuple[int, list[tuple[int, int, int]]]:
    """A block's rungs as `LatencyProcess.fold` takes them, from its per-release bucket counts.

    Every request is slower than the rungs below the block's fastest bucket
    (the prefix); none is slower than those at or above its slowest; in
    between, the slow requests are summed from the slowest bucket down.
    """
    occupied = sorted(set(window[0]) | set(window[1]), reverse=True)
    prefix = bisect.bisect_left(ladder, occupied[-1])
    end = bisect.bisect_left(ladder, occupied[0])
    changes = []
    i = s_b = s_c = 0
    for r in range(end - 1, prefix - 1, -1):
        while occupied[i] > ladder[r]:
            s_b += window[0].get(occupied[i], 0)
            s_c += window[1].get(occupied[i], 0)
            i += 1
        changes.append((r, s_b, s_c))
    return prefix, changes


def _sequential_latency(rows: Iterable[Request], template: AnalysisTemplate) -> dict[str, Any]:
    process = LatencyProcess(*latency_settings(template))
    bound = math.log(1.0 / template.alpha)
    hist, ladder = process.hist, process.ladder
    window: list[dict[int, int]] = [{}, {}]
    n = [0, 0]
    start: float | None = None
    t, lines = 0.0, 0
    for t, arm, _, latency in rows:
        start = t if start is None else start
        lines += 1
        q = bucket_of(latency)
        hist[arm][q] += 1
        window[arm][q] = window[arm].get(q, 0) + 1
        n[arm] += 1
        if n[1 - arm]:
            process.fold(n[0], n[1], *block_changes(window, ladder))
            window, n = [{}, {}], [0, 0]
            if process.log_e >= bound:
                return _failed(template, process.state(), t, start, lines)
        elif n[arm] > PENDING_MAX:
            window, n = [{}, {}], [0, 0]  # no other release for this long: dropped, as the judge does
    return _final(template, process.state(), start, t, lines)


@dataclass
class Window:
    """Requests since an interval judge was last consulted, per arm."""

    requests: list[int] = field(default_factory=lambda: [0, 0])
    errors: list[int] = field(default_factory=lambda: [0, 0])
    buckets: list[list[int]] = field(default_factory=lambda: [[0] * (len(LATENCY_BOUNDS_MS) + 1) for _ in range(2)])
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def add(self, arm: int, status: int, latency_ms: float) -> None:
        self.requests[arm] += 1
        self.errors[arm] += status >= 500
        self.buckets[arm][bucket_of(latency_ms)] += 1
        self.sums[arm] += latency_ms

    def stats(self, arm: int) -> ReleaseStats:
        return ReleaseStats(requests=self.requests[arm], errors=self.errors[arm],
                            latency_buckets=self.buckets[arm], latency_sum_ms=self.sums[arm])


def _by_interval(rows: Iterable[Request], template: AnalysisTemplate) -> dict[str, Any]:
    """threshold and mannwhitney: a check per `interval` of the recording's time, and one at its end."""
    step = template.interval or 60.0
    state: JudgeState | None = None
    window = Window()
    start: float | None = None
    t, lines, boundary = 0.0, 0, step
    for t, arm, status, latency in rows:
        start = t if start is None else start
        while t - start >= boundary:
            state, verdict = judge(template, state, window.stats(0), window.stats(1), elapsed=boundary, duration=None)
            window = Window()
            if verdict.outcome in (Outcome.FAILED, Outcome.SUCCESSFUL):
                return result(template, verdict, start + boundary, lines)
            boundary += step
        window.add(arm, status, latency)
        lines += 1
    end = 0.0 if start is None else t - start
    _, verdict = judge(template, state, window.stats(0), window.stats(1), elapsed=end, duration=end)
    return result(template, verdict, end + (start or 0.0), lines)


# ---- gauges -------------------------------------------------------------------------------------


class Pairing:
    """Per release, the sum and count of the values since the last pair (several instances: their mean)."""

    def __init__(self) -> None:
        self.sums = [0.0, 0.0]
        self.counts = [0, 0]

    def add(self, arm: int, value: float) -> None:
        self.sums[arm] += value
        self.counts[arm] += 1

    def take(self, *, partial: bool = False) -> tuple[float | None, float | None] | None:
        """The pair of means when both releases have values (or, `partial`, whatever there is); else None."""
        if not (self.counts[0] and self.counts[1]) and not (partial and (self.counts[0] or self.counts[1])):
            return None
        pair = tuple(s / c if c else None for s, c in zip(self.sums, self.counts, strict=True))
        self.sums, self.counts = [0.0, 0.0], [0, 0]
        return pair[0], pair[1]


def replay_values(rows: Iterable[Sample], template: AnalysisTemplate) -> dict[str, Any]:
    """Feed recorded gauge samples, paired per scrape, to the template's judge; the result as `result` says."""
    if template.judge == "sequential":
        return _sequential_values(rows, template)
    return _checked_values(rows, template)


def _scrapes(rows: Iterable[Sample]) -> Iterable[tuple[float, int, tuple[float | None, float | None]]]:
    """(t, lines read, pair) each time a scrape completes a pair; a last, partial one at the end."""
    pairing = Pairing()
    current: float | None = None
    lines = 0
    for t, arm, value in rows:
        if t != current:
            pair = pairing.take() if current is not None else None
            if pair is not None:
                yield current if current is not None else t, lines, pair
            current = t
        pairing.add(arm, value)
        lines += 1
    last = pairing.take(partial=True)
    if last is not None and current is not None:
        yield current, lines, last


def _sequential_values(rows: Iterable[Sample], template: AnalysisTemplate) -> dict[str, Any]:
    tally = Tally(fresh_state(template))
    bound = math.log(1.0 / template.alpha)
    start: float | None = None
    t, lines = 0.0, 0
    for t, lines, pair in _scrapes(rows):
        start = t if start is None else start
        tally.add(*pair)
        if tally.log_e >= bound:
            _, verdict = conclude(template, tally, elapsed=t - start, duration=None)
            return result(template, verdict, t, lines)
    end = 0.0 if start is None else t - start
    _, verdict = conclude(template, tally, elapsed=end, duration=end)
    return result(template, verdict, t, lines)


def _checked_values(rows: Iterable[Sample], template: AnalysisTemplate) -> dict[str, Any]:
    """threshold: each scrape's values checked as a provider's would be."""
    state: JudgeState | None = None
    start: float | None = None
    t, lines = 0.0, 0
    verdict = Verdict(outcome=Outcome.RUNNING)
    for t, lines, pair in _scrapes(rows):
        start = t if start is None else start
        state, verdict = judge(template, state, EMPTY, EMPTY, elapsed=t - start, duration=None, values=pair)
        if verdict.outcome in (Outcome.FAILED, Outcome.SUCCESSFUL):
            return result(template, verdict, t, lines)
    end = 0.0 if start is None else t - start
    _, verdict = judge(template, state, EMPTY, EMPTY, elapsed=end, duration=end, values=None)
    return result(template, verdict, t, lines)
