"""sequential, latency: an anytime-valid test on "slower than T" events, for every T of a ladder.

Latency regressions often live in the tail: every twentieth response waits on
a lock while the median does not move, so a test of means or medians misses
them. This judge turns latency into events instead — for each threshold T of a
fixed ladder, "a request slower than T" — and keeps, per ladder rung, a mixture
e-process like the error-rate judge's (see `sequential`): under the null the
candidate's *odds* of a request slower than T are at most ψ0 = 1 + margin
times the baseline's (default margin 0.5). For the tail — slow requests a few
percent of all — odds and shares are alike: half again as many slow
requests. Near the median the odds are stricter: 50 % → 60 % slow is 1.5× the
odds.

The exact conditional test. In one increment with n_b and n_c requests of
which s are slower than T, the number x of them in the candidate follows,
given n_b, n_c and s, Fisher's noncentral hypergeometric law with the odds
ratio ψ as its only parameter — the baseline's own share, which drifts with
load, drops out. Its likelihood ratio of ψ1 against ψ0,
(ψ1/ψ0)^x · Z(ψ0)/Z(ψ1) with Z(ψ) = Σ_y C(n_c, y) C(n_b, s − y) ψ^y, has
expectation exactly 1 at ψ0 and at most 1 below it (the law's likelihood
ratio grows with x), whatever n_b, n_c and s are, so the product over
increments is a supermartingale under the null. Unlike the error-rate judge's
Poisson model, which counts only where the slow requests fell, this one also
learns from the fast ones: near the median, where half the requests are
"slow", that is two to six times the evidence per request (the benchmark's
+5 ms and +10 ms cases are caught that much sooner).

The rungs are the histogram bounds of `LATENCY_BOUNDS_MS` at or above a floor
(default 5 ms), each 25 % above the previous, up to the last bound: about
fifty rungs. Every bound, not every third (a doubling ladder, as a first
version had): a tail-only regression moves the share of slow requests only in
a narrow band just above the baseline's p98, and a ladder that steps over the
band misses it — the benchmark's "p99 +20 %" case was caught half as often.
Averaging over three times as many rungs costs log 3 ≈ 1.1 in log e-value;
landing a rung inside the band gains far more. Below the floor there are no rungs at all —
two processes on one box differ by fractions of a millisecond for reasons
nobody would roll back for, and at 2 ms "0.5 ms slower" is a 25 % shift that a
rung at 2 ms would report with great confidence.

One decision for all rungs. Each increment multiplies the e-value by a
weighted mean of the likelihood ratios of all (rung, ψ1) pairs, with weights
fixed before the increment is seen: each pair's exp(sum so far), over the rungs
that are *active* — requests have fallen on both sides of them. While no rung
becomes active or idle this is exactly the equal-weight mixture over the
active rungs (the product of those steps telescopes to the mean of the
per-pair products). Any weights fixed in advance of the step keep each step's
expectation at most 1 under the null, so the product is still a
supermartingale and Ville's bound gives a false-alarm rate of at most α for
"is any rung worse?", looked at after every increment. Spreading the prior
over the active rungs only, rather than over about fifty rungs most of which
sit far above or below the traffic, saves their share of the prior (log 50/15
≈ 1.2 in log e-value with fifteen active rungs).

Where the prior goes. The odds ratios mixed at each rung run from ψ0·1.1 to
ψ0·5 (they once ran to ψ0·50; the error-rate judge's run to ρ0·10). A "slower than T" event is
common near the median, so an odds ratio above five there means the
candidate's whole distribution has moved: any grid decides that within a few
dozen requests (the benchmark's +50 ms: 25 requests at the median with the
wider grid, 37 with this one). The prior mass is better spent where decisions
take thousands of requests — a tail-only regression doubles the odds of a
request slower than the baseline's p99 — and six alternatives instead of
twelve leave each of them twice the weight (the benchmark's "p99 +20 %" case:
power 90.7 % → 95.3 %, same runs).

The state keeps the per-rung sums and the cumulative histogram of each arm,
for the p50/p95/p99 in the evidence. Pure: no clock, no I/O.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

from stagewise.analysis.judges import sequential as seq
from stagewise.core.judge_state import JudgeState, LatencyState
from stagewise.core.spec import AnalysisTemplate
from stagewise.core.stats import LATENCY_BOUNDS_MS, ReleaseStats
from stagewise.core.verdict import Outcome, Verdict

DEFAULT_MARGIN = 0.5
"""Latency margin when the template gives none: 50 % more slow requests are tolerated."""
DEFAULT_FLOOR_MS = 5.0
RUNG_STRIDE = 1
"""Every histogram bound: each rung is 25 % above the one below."""
ODDS_HIGH = 5.0
ODDS_SIZE = 6
"""The odds ratios mixed: ψ1 from ψ0·1.1 to ψ0·5, six of them, 35 % apart (see "Where the prior goes")."""
BUCKETS = len(LATENCY_BOUNDS_MS) + 1
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def odds_grid(psi0: float) -> tuple[float, ...]:
    """The alternatives ψ1 mixed at every rung."""
    return seq.rho_grid(psi0, ODDS_HIGH, ODDS_SIZE)


def rungs(floor_ms: float = DEFAULT_FLOOR_MS) -> list[int]:
    """Indices into LATENCY_BOUNDS_MS of the thresholds tested: at or above the floor, 25 % apart."""
    return list(_rungs(floor_ms))


@functools.lru_cache(maxsize=64)
def _rungs(floor_ms: float) -> tuple[int, ...]:
    """`rungs`, worked out once per floor: every look of every latency judge asks."""
    first = next((i for i, b in enumerate(LATENCY_BOUNDS_MS) if b >= floor_ms), len(LATENCY_BOUNDS_MS))
    return tuple(range(first, len(LATENCY_BOUNDS_MS), RUNG_STRIDE))


@functools.lru_cache(maxsize=8192)
def odds_weights(n_b: int, n_c: int, slow: int, psi0: float) -> tuple[tuple[float, float], ...] | None:
    """Per ψ1 of the grid, (log(ψ1/ψ0), log Z(ψ0) − log Z(ψ1)): the log-likelihood ratio is x·first + second.

    None when the increment says nothing at this rung: one arm without
    requests, or every request on the same side of the threshold (x is then
    fixed). Cached: small increments repeat.
    """
    if n_b <= 0 or n_c <= 0 or not 0 < slow < n_b + n_c:
        return None
    z0 = log_z(n_b, n_c, slow, psi0)
    return tuple((math.log(psi1 / psi0), z0 - log_z(n_b, n_c, slow, psi1)) for psi1 in odds_grid(psi0))


NEGLIGIBLE = 1e-17
"""Terms of Z below this share of the sum so far end the walk: beyond them they only shrink."""


def log_z(n_b: int, n_c: int, slow: int, psi: float) -> float:
    """log Σ_y C(n_c, y) C(n_b, slow − y) ψ^y, the normaliser of Fisher's noncentral hypergeometric law.

    Summed outward from the largest term with the ratio of neighbours,
    t(y+1)/t(y) = ψ (n_c − y)(slow − y) / ((y + 1)(n_b − slow + y + 1)), which
    falls as y grows: the terms rise to one peak and fall away on both sides,
    so the walk stops once they are negligible — about ten standard deviations
    of the law, not all min(slow, n_c) + 1 terms of a large increment.
    """
    lo, hi = max(0, slow - n_b), min(slow, n_c)

    def ratio(y: int) -> float:
        return psi * (n_c - y) * (slow - y) / ((y + 1) * (n_b - slow + y + 1))

    a, b = lo, hi  # the peak: the first y whose ratio to the next is below 1
    while a < b:
        mid = (a + b) // 2
        if ratio(mid) < 1.0:
            b = mid
        else:
            a = mid + 1
    peak = a
    total, term = 1.0, 1.0
    for y in range(peak, hi):
        term *= ratio(y)
        total += term
        if term < NEGLIGIBLE * total:
            break
    term = 1.0
    for y in range(peak - 1, lo - 1, -1):
        term /= ratio(y)
        total += term
        if term < NEGLIGIBLE * total:
            break
    return log_choose(n_c, peak) + log_choose(n_b, slow - peak) + peak * math.log(psi) + math.log(total)


def log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def active(seen: list[int]) -> list[int]:
    """The rungs (positions in the ladder) the next block's e-value is spread over.

    `seen` is [requests folded so far, then per rung the slow ones among them],
    both arms together. A rung counts once requests fell on both sides of it:
    one above every request seen has nothing to say yet, and one below them
    all splits its "slow" events exactly as the traffic is split — which, for
    a test conditioned on that split, is evidence of nothing.
    """
    return [r for r, slow in enumerate(seen[1:]) if 0 < slow < seen[0]]


_NOTHING_YET = (0.0,) * ODDS_SIZE
"""A rung's sums before its first event."""
_NOTHING_YET_LSE = seq.log_sum_exp(_NOTHING_YET)
"""Their log-sum-exp: log(ODDS_SIZE), as exactly as `seq.log_sum_exp` makes it."""
RECOUNT = 1024
"""Blocks between two fresh sums of the active rungs' weight (see `LatencyProcess._step`)."""
Change = tuple[int, int, int]
"""A rung a block says something about: (position in the ladder, slow baseline requests, slow candidate ones)."""


class LatencyProcess:
    """The per-rung e-processes between two looks, mutable: a look folds one increment, a replay many.

    Per rung it keeps the sums and their log-sum-exp, so a block costs only
    the rungs it has something to say about — those with requests of the
    block on both sides of them (a block's "slower than T" counts fall with T:
    every request is slow below the block's fastest, none above its slowest).
    The e-value's step is LSE(after) − LSE(before) over the rungs active
    before the block, exactly as the judge has always computed it.
    """

    def __init__(self, rho0: float, floor_ms: float, state: LatencyState | None = None) -> None:
        self.rho0, self.floor_ms = rho0, floor_ms
        self.ladder = ladder = _rungs(floor_ms)
        k = len(ladder)
        self.at_rungs = slice(ladder[0], ladder[-1] + 1, RUNG_STRIDE) if ladder else slice(0, 0)
        """The ladder's indexes as a slice (it is a range: `rungs`)."""
        self.llr: list[Sequence[float]]
        """Per rung, one sum per odds ratio; a rung's row is replaced, never changed, so a state's rows are shared."""
        if state is None:
            self.llr = [_NOTHING_YET] * k
            self.hist = [[0] * BUCKETS, [0] * BUCKETS]
            self.log_e = self.max_log_e = 0.0
            self.seen = [0] * (k + 1)
            self.pending: list[int] = []
        else:
            self.llr = list(state.llr)
            self.hist = [list(state.hist[0]), list(state.hist[1])]
            self.log_e, self.max_log_e = state.log_e, state.max_log_e
            self.seen = list(state.seen)
            self.pending = list(state.pending)
        if state is not None and state.rung_lse is not None and len(state.rung_lse) == len(self.llr):
            self.rung_lse = list(state.rung_lse)  # what the look that made `state` computed from the same sums
        elif state is None:
            self.rung_lse = [_NOTHING_YET_LSE] * k
        else:
            self.rung_lse = [seq.log_sum_exp(sums) for sums in self.llr]
        # The active rungs are those with requests on both sides; "slower than T" counts fall as T rises, so
        # they form one range of the ladder, [low, high), that only widens.
        self.low, self.high = self._live_range(len(ladder), 0)
        self.blocks = 0
        self._recount()

    def _live_range(self, low: int, high: int) -> tuple[int, int]:
        """The active rungs' range, widened from [low, high) — or, before any request, an empty one."""
        seen = self.seen
        if seen[0] == 0:
            return len(self.ladder), 0
        low = min(low, len(self.ladder))
        while low > 0 and seen[low] < seen[0]:
            low -= 1
        while low < len(self.ladder) and seen[low + 1] == seen[0]:
            low += 1
        high = max(high, low)
        while high < len(self.ladder) and seen[high + 1] > 0:
            high += 1
        return low, high

    @property
    def live(self) -> list[int]:
        return list(range(self.low, self.high))

    def _recount(self) -> None:
        """The active rungs' total weight, summed afresh: log-sum-exp, and the sum in a frame that keeps it exact."""
        self.offset = max((self.rung_lse[r] for r in range(self.low, self.high)), default=0.0)
        self.total = math.fsum(math.exp(self.rung_lse[r] - self.offset) for r in range(self.low, self.high))
        self.live_lse = self.offset + math.log(self.total) if self.total > 0 else 0.0

    def add(self, inc_b: list[int], inc_c: list[int]) -> None:
        """One increment's histograms: counted, and folded once it makes a block with both arms."""
        slow_b, slow_c = slower_than(inc_b), slower_than(inc_c)
        at = self.at_rungs  # the ladder as a slice: a look takes it twice over every rung
        block, self.pending = seq.gather(self.pending, [sum(inc_b), sum(inc_c), *slow_b[at], *slow_c[at]])
        if block is not None:
            self.fold_dense(block)
        self.hist = [[a + b for a, b in zip(h, inc, strict=True)] for h, inc in zip(self.hist, (inc_b, inc_c),
                                                                                     strict=True)]

    def fold_dense(self, block: list[int]) -> None:
        """A block as `gather` makes it: [n_b, n_c, slow_b per rung..., slow_c per rung...]."""
        k = len(self.ladder)
        n = block[0] + block[1]
        slow_b, slow_c = block[2 : 2 + k], block[2 + k :]
        prefix = next((r for r in range(k) if slow_b[r] + slow_c[r] < n), k)
        changes = [(r, slow_b[r], slow_c[r]) for r in range(prefix, k) if slow_b[r] + slow_c[r] > 0]
        self.fold(block[0], block[1], prefix, changes)

    def fold(self, n_b: int, n_c: int, prefix: int, changes: list[Change]) -> None:
        """A block with both arms: every request is slow at the first `prefix` rungs, `changes` say the rest."""
        low, high, offset = self.low, self.high, self.offset
        total, top = self.total, -math.inf
        for r, s_b, s_c in changes:
            weights = odds_weights(n_b, n_c, s_b + s_c, self.rho0)
            if weights is None:
                continue
            self.llr[r] = sums = [x + s_c * a + c for x, (a, c) in zip(self.llr[r], weights, strict=True)]
            old, self.rung_lse[r] = self.rung_lse[r], seq.log_sum_exp(sums)
            if low <= r < high:
                top = max(top, self.rung_lse[r])
                total += math.exp(min(self.rung_lse[r] - offset, 700.0)) - math.exp(old - offset)
        if top > -math.inf:
            self._step(total, top)
        self._see(n_b + n_c, prefix, changes)

    def _step(self, total: float, top: float) -> None:
        """Multiply the e-value by the active rungs' weight after the block over their weight before it.

        The weight is kept as a sum of exponentials relative to a fixed frame,
        updated by the rungs that moved; it is summed afresh when the frame no
        longer fits (a rung far above it, or the sum fallen by cancellation)
        and every RECOUNT blocks, so rounding never accumulates.
        """
        before = self.live_lse
        self.blocks += 1
        if top - self.offset > 300.0 or not 1e-6 * self.total < total < 1e250 or self.blocks % RECOUNT == 0:
            self._recount()
        else:
            self.total = total
            self.live_lse = self.offset + math.log(total)
        self.log_e += self.live_lse - before
        self.max_log_e = max(self.max_log_e, self.log_e)

    def _see(self, n: int, prefix: int, changes: list[Change]) -> None:
        """Count the block's slow requests per rung; rungs with requests on both sides join the active ones."""
        seen = self.seen
        seen[0] += n
        for r in range(prefix):
            seen[r + 1] += n
        for r, s_b, s_c in changes:
            seen[r + 1] += s_b + s_c
        low, high = self._live_range(self.low, self.high)
        if (low, high) != (self.low, self.high):
            self.low, self.high = low, high
            self._recount()

    def state(self, verdict: Verdict | None = None) -> LatencyState:
        return LatencyState(
            rho0=self.rho0, rungs=tuple(self.ladder), hist=(tuple(self.hist[0]), tuple(self.hist[1])),
            llr=tuple(tuple(x) for x in self.llr), log_e=self.log_e, seen=tuple(self.seen),
            max_log_e=self.max_log_e, pending=tuple(self.pending), verdict=verdict, rung_lse=tuple(self.rung_lse),
        )


def buckets(stats: ReleaseStats) -> list[int]:
    """The increment's histogram at full length, never negative."""
    raw = stats.latency_buckets[:BUCKETS]
    return [n if n > 0 else 0 for n in raw] + [0] * (BUCKETS - len(raw))


def slower_than(hist: list[int]) -> list[int]:
    """Per bound index i, the requests in `hist` slower than LATENCY_BOUNDS_MS[i]."""
    tails = list(itertools.accumulate(reversed(hist)))
    tails.reverse()
    return tails[1:]


def _quantiles(hist: list[int]) -> dict[str, float | None]:
    """The QUANTILES of `hist` as `ReleaseStats.quantile_ms` reads them (None where it says nan or inf), in one
    walk up the histogram: QUANTILES rise, so each is found at or after the one before."""
    out: dict[str, float | None] = dict.fromkeys(name for name, _ in QUANTILES)
    total = sum(hist)
    if total == 0:
        return out
    ranks = [(name, q * total) for name, q in QUANTILES]
    found, seen = 0, 0
    for i, n in enumerate(hist):
        seen += n
        while n and found < len(ranks) and seen >= ranks[found][1]:
            out[ranks[found][0]] = LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else None
            found += 1
        if found == len(ranks):
            break
    return out


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g} ms"


def latency_settings(template: AnalysisTemplate, floor_ms: float | None = None) -> tuple[float, float]:
    """ψ0 = 1 + margin, and the floor of the rungs the template tests."""
    rho0 = 1.0 + (template.margin if template.margin is not None else DEFAULT_MARGIN)
    if floor_ms is None:
        floor_ms = template.floor * 1000 if template.floor is not None else DEFAULT_FLOOR_MS
    return rho0, floor_ms


def latency_state(template: AnalysisTemplate, state: JudgeState | None,
                  floor_ms: float | None = None) -> LatencyState | None:
    """`state` if it tests this template's null, else None (another margin or floor: start afresh)."""
    rho0, floor = latency_settings(template, floor_ms)
    kept = state if isinstance(state, LatencyState) else None
    if kept is not None and (kept.rho0 != rho0 or kept.rungs != _rungs(floor)):
        return None
    return kept


def judge_latency(
    template: AnalysisTemplate,
    state: JudgeState | None,
    baseline: ReleaseStats,
    candidate: ReleaseStats,
    *,
    elapsed: float,
    duration: float | None,
    floor_ms: float | None = None,
    brief: bool = False,
) -> tuple[LatencyState, Verdict]:
    """Fold one increment's latency histograms into the per-rung e-processes (`brief`: see `judges.judge`).

    Requests are counted from the histograms (requests with a latency); the
    split p of each increment is the candidate's share of them.
    """
    kept = latency_state(template, state, floor_ms)
    if kept is not None and kept.verdict is not None:
        return kept, kept.verdict
    process = LatencyProcess(*latency_settings(template, floor_ms), kept)
    process.add(buckets(baseline), buckets(candidate))
    if brief and seq.still_running(template, log_e=process.log_e, elapsed=elapsed, duration=duration):
        return process.state(None), seq.RUNNING_UNSAID
    verdict = latency_verdict(template, process, elapsed=elapsed, duration=duration)
    return process.state(verdict if seq.finished(verdict.outcome) else None), verdict


def latency_verdict(
    template: AnalysisTemplate, process: LatencyProcess, *, elapsed: float, duration: float | None
) -> Verdict:
    """What the per-rung e-processes show now: the outcome, a sentence and the evidence."""
    ladder, hist_b, hist_c = process.ladder, process.hist[0], process.hist[1]
    # A rung that never saw an event has every sum at 0: its e-value is 1, no need to add it up.
    per_rung = [lse - math.log(ODDS_SIZE) if any(sums) else 0.0 for lse, sums in zip(process.rung_lse, process.llr,
                                                                                     strict=True)]
    n_b, n_c = sum(hist_b), sum(hist_c)
    bound = 1.0 / template.alpha
    ev = seq.e_value(process.log_e)
    q_b, q_c = _quantiles(hist_b), _quantiles(hist_c)
    evidence: dict[str, Any] = {
        "judge": "sequential",
        "metric": "latency",
        "e_value": ev,
        "threshold": bound,
        "p_value": seq.p_value(process.max_log_e),
        "alpha": template.alpha,
        "rho0": process.rho0,
        "floor_ms": process.floor_ms,
        "thresholds_ms": [LATENCY_BOUNDS_MS[i] for i in ladder],
        "requests": {"baseline": n_b, "candidate": n_c},
        "latency_ms": {"baseline": q_b, "candidate": q_c},
        "min_requests": template.min_requests,
    }
    outcome, lack = seq.decide(template, detected=process.log_e >= math.log(bound), requests=(n_b, n_c),
                               elapsed=elapsed, duration=duration)
    if per_rung:
        evidence["worst"] = _worst(per_rung, process.llr, ladder, hist_b, hist_c, process.rho0)
    if lack:
        evidence["no_data"] = template.no_data
    message = lack or _latency_sentence(template, evidence, outcome, ladder)
    return Verdict(outcome=outcome, message=message, evidence=evidence)


def _latency_sentence(template: AnalysisTemplate, evidence: dict[str, Any], outcome: Outcome,
                      ladder: Sequence[int]) -> str:
    n_b, n_c = evidence["requests"]["baseline"], evidence["requests"]["candidate"]
    q_b, q_c = evidence["latency_ms"]["baseline"], evidence["latency_ms"]["candidate"]
    bound = 1.0 / template.alpha
    ev = seq.fmt_e(evidence["e_value"])
    summary = f"p99 candidate {_ms(q_c['p99'])} vs baseline {_ms(q_b['p99'])}"
    if outcome is Outcome.FAILED:
        worst = evidence["worst"]
        share_b = worst["slow"]["baseline"] / n_b if n_b else 0.0
        share_c = worst["slow"]["candidate"] / n_c if n_c else 0.0
        return (
            f"candidate requests slower than {worst['threshold_ms']:.3g} ms: {share_c:.1%} vs baseline "
            f"{share_b:.1%} (odds ratio {worst['rho_hat_relation']} {worst['rho_hat']:.3g}), "
            f"e-value {ev} ≥ 1/α = {bound:g} after {n_b + n_c:,} requests; {summary}"
        )
    if outcome is Outcome.SUCCESSFUL:
        lowest = _ms(LATENCY_BOUNDS_MS[ladder[0]] if ladder else None)
        return (
            f"no threshold from {lowest} up shows {evidence['rho0']:g}× the baseline's "
            f"odds of a slower request (e-value {ev} < 1/α = {bound:g}) "
            f"after {n_b + n_c:,} requests; {summary}"
        )
    return f"{summary}, e-value {ev} (fails at {bound:g}) after {n_b + n_c:,} requests"


def _worst(
    per_rung: list[float],
    llr: Sequence[Sequence[float]],
    ladder: Sequence[int],
    hist_b: list[int],
    hist_c: list[int],
    rho0: float,
) -> dict[str, Any]:
    """The rung with the most evidence against the candidate, for the message and the evidence."""
    top = max(range(len(ladder)), key=per_rung.__getitem__)
    index = ladder[top]
    rho, relation = seq.rho_hat(llr[top], rho0, odds_grid(rho0))
    return {
        "threshold_ms": LATENCY_BOUNDS_MS[index],
        "e_value": seq.e_value(per_rung[top]),
        "slow": {"baseline": sum(hist_b[index + 1 :]), "candidate": sum(hist_c[index + 1 :])},
        "rho_hat": round(rho, 4),
        "rho_hat_relation": relation,
    }
