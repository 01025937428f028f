"""sequential: an anytime-valid test that the candidate fails more often than the baseline.

Why sequential. The controller looks at an analysis every second or so and acts
on the first "Failed". A fixed-sample test (a z-test, a chi-square) checked that
often false-alarms far more often than its alpha: every look is one more chance.
This judge keeps an *e-process* instead: a running likelihood ratio that, while
the candidate is no worse, is a nonnegative supermartingale starting at 1.
Ville's inequality bounds the chance that it *ever* reaches 1/α by α — over
the whole run, however often it is looked at and whatever decides when to stop.
That is what "anytime-valid" means, and why the judge may fail the candidate
after any increment.

The model. Errors in each release arrive as Poisson processes, the candidate's
at ρ times the baseline's rate per request. In one increment with n_b and n_c
requests the traffic split p = n_c / (n_b + n_c) is known, so each error
belongs to the candidate with probability q(ρ) = pρ / (pρ + 1 − p) whatever
the baseline's own rate is: counting only which arm the errors fell in removes
that unknown (and drifting) rate. The increment's likelihood ratio of ρ1
against ρ0 is (q(ρ1)/q(ρ0))^e_c · ((1 − q(ρ1))/(1 − q(ρ0)))^e_b; its
expectation is 1 under ρ0 and below 1 under any ρ < ρ0 (it grows with e_c),
for any split — even one that changes between increments, as long as it does
not depend on the errors. The product over increments is the supermartingale.
The null is ρ ≤ ρ0 = 1 + margin.

The mixture. How much worse a bad candidate is, is unknown, so the e-value is
the equal-weight mean of the ratios for a fixed log-spaced grid of ρ1 above ρ0
(a mixture of supermartingales is one). The state keeps one log-likelihood-
ratio sum per grid point; the mean is taken with log-sum-exp so that neither
thousands of errors nor none at all overflow. The grid stops at ρ0·10: a
release ten times worse is caught within a dozen or so errors whatever the
grid, so the prior's weight is better spent on the ratios that take thousands
of requests to tell (with the grid once running to ρ0·50, twelve points, a
doubled error rate on a 50/50 split took a median 75 error events in the
benchmark's traffic; with this one, 66).

Bernoulli, not Poisson. A request fails or does not: given the number of
errors, which arm they fell in is hypergeometric rather than binomial. At ρ = 1
(identical releases) drawing without replacement is less spread than with it
(Hoeffding 1963), so the ratio's expectation stays at most 1 and the guarantee
is exact. With a margin (ρ0 > 1) and common events (tens of percent) ρ acts a
little like an odds ratio, which exceeds the rate ratio: the judge is then
slightly quicker to call an increase than its margin says. For error rates of
a few percent the difference is negligible.

This module never reads a clock or does I/O: time and counts are arguments.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

from stagewise.core.judge_state import ErrorRateState, JudgeState
from stagewise.core.spec import AnalysisTemplate
from stagewise.core.stats import ReleaseStats
from stagewise.core.verdict import Outcome, Verdict

DEFAULT_MARGIN = 0.0
"""Error-rate margin when the template gives none: any increase counts."""
GRID_SIZE = 8
GRID_LOW = 1.1
GRID_HIGH = 10.0
"""The alternatives mixed: ρ1 from ρ0·1.1 to ρ0·10, eight of them, 39 % apart."""
_MAX_EXP = 700.0
"""exp() of more than this overflows a float; e-values are reported capped there."""

ARMS = ("baseline", "candidate")


# ---- the e-process, shared with the latency judge ---------------------------------------------


@functools.lru_cache(maxsize=16)
def rho_grid(rho0: float, high: float = GRID_HIGH, size: int = GRID_SIZE) -> tuple[float, ...]:
    """The alternatives ρ1 of the mixture, log-spaced from ρ0·GRID_LOW to ρ0·high."""
    step = math.log(high / GRID_LOW) / (size - 1)
    return tuple(rho0 * GRID_LOW * math.exp(step * i) for i in range(size))


@functools.lru_cache(maxsize=4096)
def event_weights(p: float, rho0: float) -> tuple[tuple[float, float], ...] | None:
    """Per ρ1 of the grid, the log-likelihood ratio of one candidate event and of one baseline event.

    `p` is the candidate's share of the increment's requests. None when the
    increment carries no information (no requests, or all on one side).
    In closed form: with d = log(pρ0 + 1 − p) − log(pρ1 + 1 − p),
    log(q1/q0) = log(ρ1/ρ0) + d and log((1 − q1)/(1 − q0)) = d.
    (Cached: splits of small increments repeat, and the answer depends on nothing else.)
    """
    if not 0.0 < p < 1.0:
        return None
    base = math.log(p * rho0 + 1.0 - p)
    weights = []
    for rho1 in rho_grid(rho0):
        d = base - math.log(p * rho1 + 1.0 - p)
        weights.append((math.log(rho1 / rho0) + d, d))
    return tuple(weights)


def add_events(
    llr: Sequence[float], weights: Sequence[tuple[float, float]], baseline_events: int, candidate_events: int
) -> list[float]:
    """The log-likelihood-ratio sums after an increment with these event counts."""
    if baseline_events == 0 and candidate_events == 0:
        return list(llr)
    return [s + candidate_events * a + baseline_events * b for s, (a, b) in zip(llr, weights, strict=True)]


PENDING_INCREMENT_MAX = 8
"""A one-sided increment of more requests than this is dropped, not held (see `gather`)."""
PENDING_MAX = 5_000
"""A held block that reaches this many requests without the other arm is dropped."""


def gather(pending: Sequence[int], increment: Sequence[int]) -> tuple[list[int] | None, list[int]]:
    """The block to fold now (None: nothing yet) and what stays pending.

    Vectors are `[baseline requests, candidate requests, payload...]`, added
    elementwise. The test learns only from blocks holding requests of both
    arms (the split p must be strictly between 0 and 1). A caller that looks
    after every request — `stagewise analyze`, a quiet service polled often —
    hands over one-request increments, which alone carry nothing; so a small
    one-sided increment is held and folded with the next ones until the other
    arm shows up. Whether to hold, fold or drop depends only on request
    counts, never on the errors, so the blocks are chosen without looking at
    the outcomes and the e-process stays valid. A large one-sided increment
    means one arm got no traffic for a while: there is no concurrent
    baseline, and it is dropped with whatever was held (as before holding).
    """
    n_b, n_c = increment[0], increment[1]
    if n_b <= 0 and n_c <= 0:
        return None, list(pending)
    if (n_b <= 0 or n_c <= 0) and n_b + n_c > PENDING_INCREMENT_MAX:
        return None, []
    merged = [a + b for a, b in zip(pending, increment, strict=True)] if pending else list(increment)
    if merged[0] > 0 and merged[1] > 0:
        return merged, []
    if merged[0] + merged[1] > PENDING_MAX:
        return None, []
    return None, merged


def log_sum_exp(values: Sequence[float]) -> float:
    """log(sum(exp(values))) without overflow or underflow."""
    top = max(values)
    return top + math.log(math.fsum([math.exp(v - top) for v in values]))


def log_mean_exp(values: Sequence[float]) -> float:
    """log(mean(exp(values))) without overflow or underflow."""
    return log_sum_exp(values) - math.log(len(values))


def split(baseline_requests: int, candidate_requests: int) -> float:
    """The candidate's share of an increment's requests (0 when there were none)."""
    total = baseline_requests + candidate_requests
    return candidate_requests / total if total > 0 else 0.0


def rho_hat(llr: Sequence[float], rho0: float, grid: Sequence[float]) -> tuple[float, str]:
    """The most likely ρ among ρ0 and the grid, and whether it is a bound: "≤", "≈" or "≥"."""
    best = max(range(len(llr)), key=llr.__getitem__)
    if llr[best] <= 0.0:
        return rho0, "≤"
    return grid[best], "≥" if best == len(grid) - 1 else "≈"


def e_value(log_e: float) -> float:
    return math.exp(min(log_e, _MAX_EXP))


def p_value(max_log_e: float) -> float:
    """Always-valid p-value: 1 / the largest e-value seen so far (Ville), at most 1."""
    return math.exp(-max(0.0, max_log_e))


# ---- deciding ----------------------------------------------------------------------------------


def decide(
    template: AnalysisTemplate,
    *,
    detected: bool,
    requests: tuple[int, int],
    elapsed: float,
    duration: float | None,
    unit: str = "requests",
) -> tuple[Outcome, str]:
    """The outcome every judge shares, and the sentence about missing data ('' when none is missing).

    Failed on detection, else Running until the deadline. At the deadline:
    Successful when both arms saw `min_requests` (with unit "samples":
    `min_samples`), otherwise the template's `no_data` policy — and the
    sentence says which arm lacked what, so a service without traffic never
    passes silently.
    """
    if detected:
        return Outcome.FAILED, ""
    if duration is None or elapsed < duration:
        return Outcome.RUNNING, ""
    need = template.min_samples if unit == "samples" else template.min_requests
    if min(requests) >= need:
        return Outcome.SUCCESSFUL, ""
    parts = [f"{arm} {n:,} of {need:,}" for arm, n in zip(ARMS, requests, strict=True) if n < need]
    parts[0] += f" {unit} needed"
    what = "too few samples" if unit == "samples" else "too little traffic"
    lack = f"{what} to judge after {fmt_seconds(elapsed)}: {', '.join(parts)}"
    if template.no_data == "fail":
        return Outcome.FAILED, f"{lack}; failing (noData: fail)"
    if template.no_data == "pass":
        return Outcome.SUCCESSFUL, f"{lack}; passing without evidence (noData: pass)"
    return Outcome.NO_DATA, f"{lack}; waiting for more (noData: wait)"


def fmt_seconds(seconds: float) -> str:
    """`2.2s`, `60s`, `1234.5s`: a tenth of a second is as precise as a person needs here."""
    return f"{seconds:.1f}".rstrip("0").rstrip(".") + "s"


RUNNING_UNSAID = Verdict(outcome=Outcome.RUNNING)
"""A Running verdict without its sentence and evidence: what a brief look returns (`judges.judge`)."""


def still_running(template: AnalysisTemplate, *, log_e: float, elapsed: float, duration: float | None) -> bool:
    """Whether `decide` says Running: nothing detected at e = exp(log_e), and the analysis not at its end."""
    return log_e < math.log(1.0 / template.alpha) and (duration is None or elapsed < duration)


def finished(outcome: Outcome) -> bool:
    """Failed and Successful are final: later calls repeat them (NoData under `wait` is not)."""
    return outcome in (Outcome.FAILED, Outcome.SUCCESSFUL)


def fmt_e(value: float) -> str:
    if value >= 1e6:
        return f"{value:.1e}"
    if value >= 10:
        return f"{value:,.0f}"
    return f"{value:.2g}"


def fmt_rho(rho: float, relation: str) -> str:
    return f"ρ̂ {relation} {rho:.3g}×"


def counts(stats: ReleaseStats) -> tuple[int, int]:
    """Requests and errors of an increment, never negative."""
    return max(0, stats.requests), max(0, stats.errors)


# ---- the error-rate judge ----------------------------------------------------------------------


class ErrorRateProcess:
    """The error-rate e-process between two looks, mutable: a look folds one increment, a replay many.

    `add` takes an increment as the controller hands it over (held until both
    arms show up, see `gather`); `fold` takes a block already holding both
    arms. The judge builds one from its state, adds the increment and writes
    the state back; `stagewise analyze` keeps one for a whole recording and
    asks the judge for a verdict only when the e-value crosses its bound.
    """

    def __init__(self, rho0: float, state: ErrorRateState | None = None) -> None:
        self.rho0 = rho0
        self.llr = [0.0] * GRID_SIZE if state is None else list(state.llr)
        self.requests = [0, 0] if state is None else list(state.requests)
        self.errors = [0, 0] if state is None else list(state.errors)
        self.max_log_e = 0.0 if state is None else state.max_log_e
        self.pending: list[int] = [] if state is None else list(state.pending)
        self.log_e = log_mean_exp(self.llr)

    def add(self, n_b: int, e_b: int, n_c: int, e_c: int) -> None:
        """One increment: counted in the totals, folded once it makes a block with both arms."""
        block, self.pending = gather(self.pending, [n_b, n_c, e_b, e_c])
        if block is not None:
            self.fold(block[0], block[1], block[2], block[3])
        self.count(n_b, e_b, n_c, e_c)

    def add_block(self, n_b: int, e_b: int, n_c: int, e_c: int) -> None:
        """A block with both arms, already gathered: folded and counted."""
        self.fold(n_b, n_c, e_b, e_c)
        self.count(n_b, e_b, n_c, e_c)

    def count(self, n_b: int, e_b: int, n_c: int, e_c: int) -> None:
        """Requests and errors into the totals of the evidence (a dropped block too)."""
        self.requests = [self.requests[0] + n_b, self.requests[1] + n_c]
        self.errors = [self.errors[0] + e_b, self.errors[1] + e_c]

    def fold(self, n_b: int, n_c: int, e_b: int, e_c: int) -> None:
        """A block's events into the sums (its requests are counted by `add`, or by the caller)."""
        if e_b == 0 and e_c == 0:
            return
        weights = event_weights(split(n_b, n_c), self.rho0)
        if weights is None:
            return
        self.llr = add_events(self.llr, weights, e_b, e_c)
        self.log_e = log_mean_exp(self.llr)
        self.max_log_e = max(self.max_log_e, self.log_e)

    def state(self, verdict: Verdict | None = None) -> ErrorRateState:
        return ErrorRateState(rho0=self.rho0, requests=(self.requests[0], self.requests[1]),
                              errors=(self.errors[0], self.errors[1]), llr=tuple(self.llr),
                              max_log_e=self.max_log_e, pending=tuple(self.pending), verdict=verdict)


def error_rate_rho0(template: AnalysisTemplate) -> float:
    return 1.0 + (template.margin if template.margin is not None else DEFAULT_MARGIN)


def error_rate_state(template: AnalysisTemplate, state: JudgeState | None) -> ErrorRateState | None:
    """`state` if it tests this template's null, else None (another margin or grid: start afresh)."""
    kept = state if isinstance(state, ErrorRateState) else None
    if kept is not None and (kept.rho0 != error_rate_rho0(template) or len(kept.llr) != GRID_SIZE):
        return None
    return kept


def judge_error_rate(
    template: AnalysisTemplate,
    state: JudgeState | None,
    baseline: ReleaseStats,
    candidate: ReleaseStats,
    *,
    elapsed: float,
    duration: float | None,
    brief: bool = False,
) -> tuple[ErrorRateState, Verdict]:
    """Fold one increment into the error-rate e-process and say what it shows (`brief`: see `judges.judge`).

    State (`ErrorRateState`): the cumulative requests and errors per arm, one
    log-likelihood-ratio sum per ρ1 of the grid, and the largest log e-value
    seen (for the p-value). A state made for another margin is started
    afresh, since its sums test another null; so is one made for another grid.
    """
    kept = error_rate_state(template, state)
    if kept is not None and kept.verdict is not None:
        return kept, kept.verdict
    process = ErrorRateProcess(error_rate_rho0(template), kept)
    (n_b, e_b), (n_c, e_c) = counts(baseline), counts(candidate)
    process.add(n_b, e_b, n_c, e_c)
    process.max_log_e = max(process.max_log_e, process.log_e)
    if brief and still_running(template, log_e=process.log_e, elapsed=elapsed, duration=duration):
        return process.state(None), RUNNING_UNSAID
    verdict = error_rate_verdict(template, process, elapsed=elapsed, duration=duration)
    return process.state(verdict if finished(verdict.outcome) else None), verdict


def error_rate_verdict(
    template: AnalysisTemplate, process: ErrorRateProcess, *, elapsed: float, duration: float | None
) -> Verdict:
    """What the process shows now: the outcome, a sentence and the evidence."""
    total_n, total_e, rho0 = process.requests, process.errors, process.rho0
    bound = 1.0 / template.alpha
    rate_b = total_e[0] / total_n[0] if total_n[0] else 0.0
    rate_c = total_e[1] / total_n[1] if total_n[1] else 0.0
    rho, relation = rho_hat(process.llr, rho0, rho_grid(rho0))
    ev = e_value(process.log_e)
    evidence: dict[str, Any] = {
        "judge": "sequential",
        "metric": "error-rate",
        "e_value": ev,
        "threshold": bound,
        "p_value": p_value(process.max_log_e),
        "alpha": template.alpha,
        "rho0": rho0,
        "rho_hat": round(rho, 4),
        "rho_hat_relation": relation,
        "error_rate": {"baseline": rate_b, "candidate": rate_c},
        "requests": {"baseline": total_n[0], "candidate": total_n[1]},
        "errors": {"baseline": total_e[0], "candidate": total_e[1]},
        "min_requests": template.min_requests,
    }
    outcome, lack = decide(template, detected=process.log_e >= math.log(bound),
                           requests=(total_n[0], total_n[1]), elapsed=elapsed, duration=duration)
    if lack:
        evidence["no_data"] = template.no_data
    rates = f"candidate error rate {rate_c:.1%} vs baseline {rate_b:.1%}"
    requests = f"after {sum(total_n):,} requests"
    if lack:
        message = lack
    elif outcome is Outcome.FAILED:
        message = f"{rates} ({fmt_rho(rho, relation)}), e-value {fmt_e(ev)} ≥ 1/α = {bound:g} {requests}"
    elif outcome is Outcome.SUCCESSFUL:
        allowed = f"more than {rho0:g}× the baseline's" if rho0 > 1.0 else "higher than the baseline's"
        message = (f"{rates}: no evidence of an error rate {allowed} "
                   f"(e-value {fmt_e(ev)} < 1/α = {bound:g}) {requests}")
    else:
        message = f"{rates}, e-value {fmt_e(ev)} (fails at {bound:g}) {requests}"
    return Verdict(outcome=outcome, message=message, evidence=evidence)
