"""The yardsticks of benchmarks/analysis.py: the limit (an oracle SPRT), Kayenta as users run it, and savvi.

The oracle. Wald's SPRT told the true effect: among all tests with error
rates (α, β) it has the smallest expected sample size (Wald & Wolfowitz
1948), and for any test E[N] ≥ ((1−β)·log((1−β)/α) + β·log(β/(1−α))) / KL,
KL the information per request (Wald's bound). `sequential`'s median requests
to detection are printed as a multiple of it.
- Error rates: the SPRT of "an error event falls on the candidate with
  probability q1 = sρ/(sρ + 1 − s)" against q0 = s (s the candidate's share),
  run on the simulated events themselves (overshoot included). Any test that
  holds its level whatever the baseline's own, drifting, rate does can use
  no more than which arm the events fall in (see `best_possible` in
  analysis.py): this is the limit for such tests, and so for the judge.
- Latency: Wald's bound for an oracle told the baseline's whole latency
  distribution and the shift, learning from the candidate's requests — more
  than any two-sample test can know, so a bound no judge can reach on a
  50/50 split, where learning the baseline costs about a factor two.

Kayenta as users run it. Spinnaker's canary config asks the metric store for
one value per release per minute (the step) — the error rate, the mean
latency — over the window since the canary started, and NetflixACAJudge
compares the two series with a two-sided Mann–Whitney test at 98 %
confidence: High (a failure) when the candidate is higher with a mean ratio
above 1. A judgement every KAYENTA_INTERVAL (a canary analysis interval of
five minutes) and one at the end.

savvi. The implementation by the authors of Lindon et al. (KDD 2022) of the
canary test in their paper: `InhomogeneousPoissonProcess`, a Dirichlet-
multinomial Bayes factor on which arm the error events fall in, fed event by
event and read one-sided (odds ≥ 1/α with the candidate's share above s).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stagewise.analysis.judges.mannwhitney import mann_whitney

KAYENTA_STEP = 60.0
"""Seconds per value of a release's series (Spinnaker's metric step)."""
KAYENTA_INTERVAL = 300.0
"""Seconds between two judgements of a canary analysis, over the window since its start."""
KAYENTA_CONFIDENCE = 0.98


def wald_numerator(alpha: float, beta: float) -> float:
    """(1−β)·log((1−β)/α) + β·log(β/(1−α)): the information an SPRT with these error rates must gather."""
    return (1 - beta) * math.log((1 - beta) / alpha) + beta * math.log(beta / (1 - alpha))


# ---- the oracle for error rates ---------------------------------------------------------------------


def event_arms(candidate: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Request index and arm (1: candidate) of every error event, in order."""
    where = np.flatnonzero(error)
    return where, candidate[where].astype(np.int8)


def sprt_errors(events: tuple[np.ndarray, np.ndarray], share: float, ratio: float, alpha: float, beta: float,
                horizon: int) -> tuple[int | None, int]:
    """Wald's SPRT on the events' arms told ρ: (request where it rejects or None, requests it took)."""
    where, arms = events
    q1 = share * ratio / (share * ratio + 1 - share)
    up, down = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
    steps = np.where(arms == 1, math.log(q1 / share), math.log((1 - q1) / (1 - share)))
    llr = np.cumsum(steps)
    crossed = np.flatnonzero((llr >= up) | (llr <= down))
    if len(crossed) == 0:
        return None, horizon
    k = int(crossed[0])
    return (int(where[k]) if llr[k] >= up else None), int(where[k]) + 1


# ---- the oracle for latency -----------------------------------------------------------------------

_Z = np.linspace(-9.0, 9.0, 20_001)
_PHI = np.exp(-_Z**2 / 2) / math.sqrt(2 * math.pi) * (_Z[1] - _Z[0])


def log_lognormal(x: np.ndarray, median: float, sigma: float) -> np.ndarray:
    return -np.log(x) - math.log(sigma * math.sqrt(2 * math.pi)) - (np.log(x) - math.log(median)) ** 2 / (2 * sigma**2)


def kl_latency(median: float, sigma: float, shift_ms: float, tail: bool) -> float:
    """KL(candidate ‖ baseline) of one candidate request's latency, by quadrature over the normal z."""
    x0 = median * np.exp(sigma * _Z)
    base = log_lognormal(x0, median, sigma)
    if tail:
        p98 = median * math.exp(sigma * 2.0537)
        above = x0 > p98
        x1 = np.where(above, 1.2 * x0, x0)
        log_f1 = np.where(above, base - math.log(1.2), base)
        return float(np.sum(_PHI * (log_f1 - log_lognormal(x1, median, sigma))))
    return float(np.sum(_PHI * (base - log_lognormal(x0 + shift_ms, median, sigma))))


def oracle_latency_requests(medians: list[float], sigma: float, shift_ms: float, tail: bool, share: float,
                            alpha: float, beta: float) -> float:
    """Wald's bound on the expected requests, averaged over the replications' medians."""
    need = wald_numerator(alpha, beta)
    return float(np.mean([need / (share * kl_latency(m, sigma, shift_ms, tail)) for m in medians]))


# ---- Kayenta as users run it ----------------------------------------------------------------------


def per_minute(t: np.ndarray, candidate: np.ndarray, values: np.ndarray, minutes: int) -> np.ndarray:
    """The mean of `values` per release (rows) and minute (columns); NaN for a minute without requests."""
    minute = np.minimum((t // KAYENTA_STEP).astype(np.int64), minutes - 1)
    out = np.full((2, minutes), np.nan)
    for arm in (0, 1):
        mask = candidate == bool(arm)
        count = np.bincount(minute[mask], minlength=minutes)
        total = np.bincount(minute[mask], weights=values[mask], minlength=minutes)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[arm] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def kayenta_high(baseline: np.ndarray, candidate: np.ndarray) -> bool:
    """NetflixACAJudge on two series (NaNs removed): Mann–Whitney at 98 %, candidate higher, mean ratio > 1."""
    b, c = baseline[np.isfinite(baseline)], candidate[np.isfinite(candidate)]
    if len(b) < 2 or len(c) < 2:
        return False
    values = np.unique(np.concatenate([b, c]))
    hist_b = np.searchsorted(values, b)
    hist_c = np.searchsorted(values, c)
    counts_b = np.bincount(hist_b, minlength=len(values)).tolist()
    counts_c = np.bincount(hist_c, minlength=len(values)).tolist()
    test = mann_whitney(counts_b, counts_c, values.tolist(), KAYENTA_CONFIDENCE)
    mean_b, mean_c = float(b.mean()), float(c.mean())
    ratio = math.inf if mean_b <= 0 < mean_c else (mean_c / mean_b if mean_b > 0 else 1.0)
    return bool(test["z"] > 0 and test["p_value"] < 1 - KAYENTA_CONFIDENCE and ratio > 1.0)


def kayenta_as_run(t: np.ndarray, candidate: np.ndarray, values: np.ndarray) -> float | None:
    """The time (s) of the first High judgement, judging every KAYENTA_INTERVAL and at the end; None if none."""
    end = float(t[-1])
    minutes = max(1, math.ceil(end / KAYENTA_STEP))
    series = per_minute(t, candidate, values, minutes)
    checks = [*np.arange(KAYENTA_INTERVAL, end, KAYENTA_INTERVAL).tolist(), end]
    for at in checks:
        complete = max(1, int(at // KAYENTA_STEP))  # minutes whose step has ended by then
        if kayenta_high(series[0, :complete], series[1, :complete]):
            return float(at)
    return None


def index_at(t: np.ndarray, seconds: float | None) -> int | None:
    """The last request served by `seconds`."""
    if seconds is None:
        return None
    return max(0, int(np.searchsorted(t, seconds, side="right")) - 1)


# ---- savvi ------------------------------------------------------------------------------------------


def savvi_errors(events: tuple[np.ndarray, np.ndarray], share: float, alpha: float) -> int | None:
    """The request where savvi's canary test rejects, one-sided (the candidate's event share above `share`)."""
    from savvi.multinomial import InhomogeneousPoissonProcess

    where, arms = events
    test = InhomogeneousPoissonProcess(alpha, np.array([1 - share, share]), np.array([[-1, 1]]))
    one = (np.array([1, 0]), np.array([0, 1]))
    bound = 1 / alpha
    for index, arm in zip(where.tolist(), arms.tolist(), strict=True):
        test.update(one[arm])
        if test.odds >= bound and test.counts[1] / test.counts.sum() > share:
            return int(index)
    return None


def summary_row(name: str, hits: list[int | None], times: list[float | None]) -> dict[str, Any]:
    """Power and median requests and seconds of one yardstick over the replications."""
    found = [h for h in hits if h is not None]
    seconds = [s for s in times if s is not None]
    return {"judge": name, "rate": len(found) / len(hits) if hits else 0.0,
            "requests_p50": float(np.median(np.array(found) + 1)) if found else None,
            "seconds_p50": float(np.median(seconds)) if seconds else None}
