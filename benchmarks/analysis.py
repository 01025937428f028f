"""How fast and how honestly each judge decides, on simulated traffic — one table, one run.

    .venv/bin/python benchmarks/analysis.py [--quick] [--reps-aa 1000] [--reps 400] [--workers 2]

Needs numpy (the `bench` extra) for the simulation only: every decision is made
by the judges' own code, at the cadence each one really has.

Traffic. Each replication is one canary run of HORIZON requests arriving as a
Poisson stream of RATE requests/s on average, split 50/50 or 5/95 at random per
request. Error probability and traffic follow a shared daily curve (±50 %, the
run starting at a random time of day; a "day" is compressed to two run lengths
so that the drift is felt). Each arm runs INSTANCES instances whose error rate
and latency scale differ a little (overdispersion: lognormal, CV 5 % and 2 %),
so even A/A arms are never exactly alike — as in production. Latency is
lognormal (σ 0.5) around a median drawn per replication from 20–80 ms, so that
no judge profits from a lucky alignment with histogram buckets.

Regressions of the candidate: error-rate ratios 1.1 … 5; latency +1 … +50 ms
on every request; and a tail-only shift: requests above the baseline's p98 take
20 % longer, so p99 is +20 % and the median is unchanged.

Cadence. `sequential` is consulted after every request. Consulting it request
by request through Python would take hours, so the run is cut at exactly the
points where that consultation could change its answer: a one-request increment
is held until the other arm has a request (see `sequential.gather`), so the
e-process only moves when such a block closes, and only when the block holds an
event. For error rates the real judge is called once per block holding an
error (blocks without one change no e-value, so skipping them changes only the
request totals in the evidence): the decisions, and the request each falls on,
are exactly those of a per-request replay. For latency every block
holds events, so the same e-process is computed with numpy from the judge's own
weights and rungs, and checked against the real judge on the first
replications of every latency scenario (the decision must fall on the same
request; the run stops if not). `mannwhitney` and `threshold` are called once
per INTERVAL, as Kayenta and Flagger do, plus once at the horizon.

Matched false-positive rates. `mannwhitney` at Kayenta's 98 % false-alarms
more often than α when checked every interval, and a judge that alarms more
often also "detects" sooner. So its runs are also replayed at the level that
gives it a 5 % A/A false-positive rate here (`mw@5%FPR`: each check's p-value
is kept, so no judge call is repeated), and `sequential` is compared with both.

What no test can do. For the error-rate regressions the comparison also
prints a bound: the power of the most powerful test there is, given a third
of the requests mannwhitney needed, at mannwhitney's false-positive rate (see
`best_possible`). Where that bound is below mannwhitney's power, "3× fewer
requests" is out of reach of every judge, not only of this one.

Measured against the limit (limits.py). The oracle — Wald's SPRT told the
true effect — at `sequential`'s own error rates, and `sequential`'s median
requests as a multiple of its expected requests; Kayenta as users run it
(`kayenta-as-run`: one value per release per minute, NetflixACAJudge every
five minutes); savvi's canary test on the same error events. Then the gauges
(gauges.py): the value judge's A/A rate, power, oracle, Kayenta as run, and
k = 5 metrics in one analysis. One run, one table each, and the wall time.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from dataclasses import dataclass
from typing import Any

import gauges
import limits
import numpy as np

from stagewise.analysis.judges import judge
from stagewise.analysis.judges.sequential_latency import DEFAULT_FLOOR_MS, odds_grid, rungs
from stagewise.analysis.judges.sequential_latency import log_choose as log_comb
from stagewise.core.judge_state import JudgeState
from stagewise.core.spec import AnalysisTemplate, RouterTemplate
from stagewise.core.stats import LATENCY_BOUNDS_MS, ReleaseStats
from stagewise.core.verdict import Outcome

HORIZON = 20_000
"""Requests per replication."""
RATE = 20.0
"""Requests per second on average."""
INTERVAL = 60.0
"""Seconds between checks of mannwhitney and threshold (Flagger's and Kayenta's usual minute)."""
BASE_ERROR = 0.01
INSTANCES = 4
SIGMA = 0.5
BOUNDS = np.array(LATENCY_BOUNDS_MS)
CROSSCHECK = 1
"""Replications per latency scenario also run through the real latency judge, block by block."""
CROSSCHECK_REQUESTS = 6_000
"""The cross-check replays this many requests of the run (the real judge takes ~1 ms a block)."""
STRIDE = 50
"""Error events are also counted every this many requests, for the bound on any test (`best_possible`)."""

ERRORS_SEQ = RouterTemplate(metric="error-rate", judge="sequential", alpha=0.05)
LATENCY_SEQ = RouterTemplate(metric="latency", judge="sequential", alpha=0.05, margin=0.05)
"""margin 0.05: 5 % higher odds of a slow request are tolerated. The arms' instances differ by ~1 % in latency
(as real ones do); at margin 0 the exact test notices that in a few percent of A/A runs, above α. The default
0.5 absorbs the larger noise between real processes on one box (see README)."""
ERRORS_MW = RouterTemplate(metric="error-rate", judge="mannwhitney", interval=INTERVAL)
LATENCY_MW = RouterTemplate(metric="latency", judge="mannwhitney", interval=INTERVAL)
ERRORS_THRESHOLD = RouterTemplate(metric="error-rate", judge="threshold", interval=INTERVAL,
                                    threshold_range={"max": 2 * BASE_ERROR})


@dataclass(frozen=True)
class Scenario:
    name: str
    error_ratio: float = 1.0
    shift_ms: float = 0.0
    tail: bool = False

    @property
    def metric(self) -> str:
        return "latency" if self.shift_ms or self.tail else "error-rate"


SCENARIOS = [
    Scenario("A/A"),
    *(Scenario(f"errors ×{r:g}", error_ratio=r) for r in (1.1, 1.25, 1.5, 2, 5)),
    *(Scenario(f"latency +{d:g} ms", shift_ms=d) for d in (1, 5, 10, 50)),
    Scenario("tail p99 +20%", tail=True),
]
SPLITS = (0.5, 0.05)


@dataclass
class Traffic:
    t: np.ndarray
    candidate: np.ndarray
    error: np.ndarray
    latency: np.ndarray
    p99_baseline: float
    median: float = 0.0


def simulate(rng: np.random.Generator, scenario: Scenario, share: float) -> Traffic:
    n = HORIZON
    phase = rng.uniform(0, 1)
    day = 2 * n / RATE
    gaps = rng.exponential(1.0, n)
    # thin time by the daily curve: more traffic at the peak, as the error rate rises with it
    rough_t = np.cumsum(gaps) / RATE
    curve = 1 + 0.5 * np.sin(2 * math.pi * (rough_t / day + phase))
    t = np.cumsum(gaps / (RATE * curve))
    candidate = rng.random(n) < share
    instance = rng.integers(0, INSTANCES, n)
    err_mult = rng.lognormal(0, 0.05, (2, INSTANCES))
    lat_mult = rng.lognormal(0, 0.02, (2, INSTANCES))
    arm = candidate.astype(int)
    p_error = BASE_ERROR * curve * err_mult[arm, instance] * np.where(candidate, scenario.error_ratio, 1.0)
    error = rng.random(n) < np.minimum(p_error, 1.0)
    median = rng.uniform(20, 80)
    z = rng.standard_normal(n)
    latency = median * lat_mult[arm, instance] * np.exp(SIGMA * z)
    if scenario.tail:
        p98 = median * math.exp(SIGMA * 2.0537)
        latency = np.where(candidate & (latency > p98), latency * 1.2, latency)
    latency = latency + np.where(candidate, scenario.shift_ms, 0.0)
    return Traffic(t=t, candidate=candidate, error=error, latency=latency,
                   p99_baseline=median * math.exp(SIGMA * 2.3263), median=median)


# ---- sequential, as if consulted after every request -----------------------------------------------


def blocks(candidate: np.ndarray) -> np.ndarray:
    """Indices of the requests that close a block when the judge is fed one request at a time.

    A block opens with a request and closes with the first request of the other
    arm (`sequential.gather`). Over runs of same-arm requests: run 0 opens a
    block; a run of two or more always leaves one open; a run of one closes the
    open block and opens none, so after the last longer run blocks alternate.
    """
    starts = np.flatnonzero(np.r_[True, candidate[1:] != candidate[:-1]])
    lengths = np.diff(np.r_[starts, len(candidate)])
    k = np.arange(len(starts))
    anchor = (lengths >= 2) | (k == 0)
    last_anchor = np.maximum.accumulate(np.where(anchor, k, 0))
    open_after = (k - last_anchor) % 2 == 0
    return starts[1:][open_after[:-1]]


def sequential_errors(traffic: Traffic) -> int | None:
    """The request (index) at which the real error-rate judge fails the candidate, if it does."""
    ends = blocks(traffic.candidate)
    if len(ends) == 0:
        return None
    firsts = np.r_[0, ends[:-1] + 1]
    cand, err = traffic.candidate.astype(np.int64), traffic.error.astype(np.int64)
    n_c = np.add.reduceat(cand, firsts)
    n_b = (ends - firsts + 1) - n_c
    e_c = np.add.reduceat(cand * err, firsts)
    e_b = np.add.reduceat(err, firsts) - e_c
    state: JudgeState | None = None
    for i in np.flatnonzero(e_b + e_c):
        state, verdict = judge(ERRORS_SEQ, state, ReleaseStats(requests=int(n_b[i]), errors=int(e_b[i])),
                               ReleaseStats(requests=int(n_c[i]), errors=int(e_c[i])),
                               elapsed=float(traffic.t[ends[i]]), duration=None)
        if verdict.outcome is Outcome.FAILED:
            return int(ends[i])
    return None


LOG_FACTORIAL = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, HORIZON + 1)))])


def log_choose(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    ok = (k >= 0) & (k <= n)
    n_, k_ = np.clip(n, 0, None), np.clip(k, 0, None)
    return np.where(ok, LOG_FACTORIAL[n_] - LOG_FACTORIAL[k_] - LOG_FACTORIAL[np.clip(n_ - k_, 0, None)], -np.inf)


def odds_llr(n_b: np.ndarray, n_c: np.ndarray, slow: np.ndarray, x: np.ndarray, psi0: float) -> np.ndarray:
    """Per block and ψ1 of the grid, the log-likelihood ratio of the noncentral hypergeometric law (as the judge)."""
    grid = np.array(odds_grid(psi0))
    # small blocks repeat: the normalisers are computed once per distinct (n_b, n_c, slow)
    distinct, which = np.unique(np.stack([n_b, n_c, slow], axis=1), axis=0, return_inverse=True)
    u_b, u_c, u_s = distinct[:, 0], distinct[:, 1], distinct[:, 2]
    ys = np.arange(int(u_c.max()) + 1)[None, :]
    terms = log_choose(u_c[:, None], ys) + log_choose(u_b[:, None], u_s[:, None] - ys)  # distinct × y

    def log_z(psi: np.ndarray) -> np.ndarray:
        t = terms[:, :, None] + ys[:, :, None] * np.log(psi)[None, None, :]
        m = t.max(axis=1)
        return m + np.log(np.exp(t - m[:, None, :]).sum(axis=1))

    normaliser = (log_z(np.array([psi0])) - log_z(grid))[which.reshape(-1)]
    informative = (slow > 0) & (slow < n_b + n_c)
    out = x[:, None] * np.log(grid / psi0)[None, :] + normaliser
    return np.where(informative[:, None], out, 0.0)


def sequential_latency(traffic: Traffic, template: AnalysisTemplate = LATENCY_SEQ) -> int | None:
    """The latency judge's e-process over per-request blocks, with numpy; the request where it fails.

    As the judge: per rung and ψ1 a log-likelihood-ratio sum L; each block
    multiplies the e-value by the mean of its likelihood ratios weighted by
    exp(L) before it, over the rungs active before it (requests seen on both
    sides) — in logs, LSE(L after) − LSE(L before) over those rungs.
    """
    ends = blocks(traffic.candidate)
    if len(ends) == 0:
        return None
    traffic = truncate(traffic, int(ends[-1]) + 1)  # requests after the last block are never folded
    firsts = np.r_[0, ends[:-1] + 1]
    psi0 = 1.0 + (template.margin if template.margin is not None else 0.5)
    ladder = rungs(DEFAULT_FLOOR_MS)
    bucket = np.searchsorted(BOUNDS, traffic.latency, side="left")
    cand = traffic.candidate
    n_c = np.add.reduceat(cand.astype(np.int64), firsts)
    n_all = ends - firsts + 1
    n_b = n_all - n_c
    seen_before = np.cumsum(n_all) - n_all
    top = int(bucket.max())
    sums, masks = [], []
    for index in ladder:
        if index >= top:
            continue  # no request slower than this rung: never active
        slow = bucket > index
        s_c = np.add.reduceat((slow & cand).astype(np.int64), firsts)
        s_all = np.add.reduceat(slow.astype(np.int64), firsts)
        slow_before = np.cumsum(s_all) - s_all
        live = (slow_before > 0) & (slow_before < seen_before)
        if not live.any():
            continue
        sums.append(np.cumsum(odds_llr(n_b, n_c, s_all, s_c, psi0), axis=0))
        masks.append(live)
    if not sums:
        return None
    llr = np.stack(sums, axis=1)  # blocks × rungs × grid
    live = np.stack(masks, axis=1)[:, :, None]
    previous = np.concatenate([np.zeros_like(llr[:1]), llr[:-1]])

    def lse(x: np.ndarray) -> np.ndarray:
        x = np.where(live, x, -np.inf).reshape(len(x), -1)
        m = x.max(axis=1)
        safe = np.where(np.isfinite(m), m, 0.0)
        return safe + np.log(np.exp(x - safe[:, None]).sum(axis=1))

    any_live = live[:, :, 0].any(axis=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        step = np.where(any_live, lse(llr) - lse(previous), 0.0)
    log_e = np.cumsum(step)
    hits = np.flatnonzero(log_e >= math.log(1 / template.alpha))
    return int(ends[hits[0]]) if len(hits) else None


def truncate(traffic: Traffic, n: int) -> Traffic:
    return Traffic(t=traffic.t[:n], candidate=traffic.candidate[:n], error=traffic.error[:n],
                   latency=traffic.latency[:n], p99_baseline=traffic.p99_baseline, median=traffic.median)


def sequential_latency_real(traffic: Traffic) -> int | None:
    """The real latency judge, one call per block: the reference for `sequential_latency`."""
    ends = blocks(traffic.candidate)
    firsts = np.r_[0, ends[:-1] + 1] if len(ends) else np.array([], dtype=int)
    bucket = np.searchsorted(BOUNDS, traffic.latency, side="left")
    state: JudgeState | None = None
    for first, end in zip(firsts, ends, strict=True):
        hists = [np.bincount(bucket[first : end + 1][traffic.candidate[first : end + 1] == arm],
                             minlength=len(BOUNDS) + 1) for arm in (False, True)]
        b, c = (ReleaseStats(requests=int(h.sum()), latency_buckets=h.tolist()) for h in hists)
        state, verdict = judge(LATENCY_SEQ, state, b, c, elapsed=float(traffic.t[end]), duration=None)
        if verdict.outcome is Outcome.FAILED:
            return int(end)
    return None


# ---- judges with an interval --------------------------------------------------------------------


def interval_judge(traffic: Traffic, template: AnalysisTemplate) -> tuple[int | None, list[Check]]:
    """Consult `template`'s judge once per INTERVAL and once at the horizon; the request where it fails.

    Also every check the judge made, with the p-value at which it would have
    called that check High (1 when the effect points the other way or is
    within `allowedIncrease`; mannwhitney only): enough to replay the run at
    any other confidence level without calling the judge again.
    """
    t_end = float(traffic.t[-1])
    edges = np.arange(INTERVAL, t_end, INTERVAL)
    cuts = np.searchsorted(traffic.t, edges, side="left")
    bucket = np.searchsorted(BOUNDS, traffic.latency, side="left")
    state: JudgeState | None = None
    checks: list[Check] = []
    start = 0
    errors = 0
    for k, stop in enumerate([*cuts.tolist(), len(traffic.t)]):
        last = k == len(cuts)
        elapsed = t_end if last else float(edges[k])
        incs = []
        for arm in (False, True):
            mask = traffic.candidate[start:stop] == arm
            lat = traffic.latency[start:stop][mask]
            hist = (np.bincount(bucket[start:stop][mask], minlength=len(BOUNDS) + 1)
                    if template.metric == "latency" else [])
            incs.append(ReleaseStats(requests=int(mask.sum()), errors=int(traffic.error[start:stop][mask].sum()),
                                     latency_buckets=list(map(int, hist)), latency_sum_ms=float(lat.sum())))
        errors += int(traffic.error[start:stop].sum())
        state, verdict = judge(template, state, incs[0], incs[1], elapsed=elapsed,
                               duration=t_end if last else None)
        ev = verdict.evidence
        if "p_value" in ev and ev.get("classification") in ("High", "Pass"):
            effect = ev.get("effect_size")
            worse = ev["statistic"]["z"] > 0 and (effect is None or effect > template.allowed_increase)
            checks.append(Check(max(stop - 1, 0), float(ev["p_value"]) if worse else 1.0, errors))
        if verdict.outcome is Outcome.FAILED:
            return max(stop - 1, 0), checks
        start = stop
    return None, checks


@dataclass(frozen=True)
class Check:
    """One interval check of mannwhitney: the request it fell on, its one-sided p-value, error events by then."""
    index: int
    p_value: float
    errors: int


def replay(checks: list[Check], alpha: float) -> Check | None:
    """The first check that fails at level `alpha` (failureLimit 1, as the template's default)."""
    return next((c for c in checks if c.p_value < alpha), None)


def calibrated_alpha(aa_checks: list[list[Check]], target: float) -> float:
    """The largest level at which mannwhitney, replayed on the A/A runs, false-alarms in at most `target` of them.

    This tunes mannwhitney on the very runs it is then measured on, with
    knowledge no operator has: a favour to it, not to sequential.
    """
    lows = sorted(min((c.p_value for c in run), default=1.0) for run in aa_checks)
    allowed = math.floor(target * len(lows))
    return lows[allowed] if allowed < len(lows) else 1.0


def latency_threshold(p99: float) -> AnalysisTemplate:
    """Flagger's request-duration check, with the limit an operator would set: 25 % above today's p99."""
    return RouterTemplate(metric="latency", judge="threshold", interval=INTERVAL,
                            threshold_range={"max": 1.25 * p99})


# ---- running and reporting ----------------------------------------------------------------------

CALIBRATED = "mw@5%FPR"
"""mannwhitney at the confidence that gives it, on this benchmark's A/A runs, the false-positive rate α = 5 %."""
KAYENTA = "kayenta-as-run"
"""NetflixACAJudge over one value per release per minute, judged every five minutes (benchmarks/limits.py)."""
JUDGES = ("sequential", "mannwhitney", CALIBRATED, "threshold", KAYENTA, "savvi", "oracle")


def run_job(job: tuple[int, int, int, int]) -> dict[str, Any]:
    """All replications of one scenario and split, for every judge of its metric."""
    index, split_index, reps, seed = job
    scenario, share = SCENARIOS[index], SPLITS[split_index]
    metrics = ("error-rate", "latency") if scenario.name == "A/A" else (scenario.metric,)
    rng = np.random.default_rng(seed)
    found: dict[tuple[str, str], list[int | None]] = {}
    times: dict[tuple[str, str], list[float | None]] = {}
    events: dict[tuple[str, str], list[int]] = {}
    mw_checks: dict[str, list[list[Check]]] = {m: [] for m in metrics}
    totals: list[list[int]] = []
    arms: list[tuple[np.ndarray, np.ndarray]] = []
    medians: list[float] = []
    started = time.perf_counter()
    crosschecked = 0
    for rep in range(reps):
        traffic = simulate(rng, scenario, share)
        medians.append(traffic.median)
        for metric in metrics:
            if metric == "error-rate":
                arms.append(limits.event_arms(traffic.candidate, traffic.error))
                hits, checks = error_judges(traffic, share, arms[-1])
                totals.append(np.cumsum(traffic.error)[STRIDE - 1 :: STRIDE].tolist())
            else:
                crosschecked += crosscheck(scenario, share, traffic) if rep < CROSSCHECK else 0
                hits, checks = latency_judges(traffic)
            mw_checks[metric].append(checks)
            for j, (hit, at) in hits.items():
                found.setdefault((j, metric), []).append(hit)
                times.setdefault((j, metric), []).append(at if at is not None or hit is None
                                                         else float(traffic.t[hit]))
                upto = HORIZON if hit is None else hit + 1
                events.setdefault((j, metric), []).append(int(traffic.error[:upto].sum()))
    rows = []
    for (j, metric), hits in found.items():
        rows.append(summarize(scenario, share, j, metric, hits, events[j, metric], times[j, metric]))
        if j == "sequential" and metric == "error-rate":
            rows[-1]["error_totals"] = totals
    rows += oracle_rows(scenario, share, metrics, found, arms, medians)
    return {"rows": rows, "seconds": time.perf_counter() - started, "crosschecked": crosschecked,
            "scenario": index, "split": split_index, "checks": mw_checks}


Hits = dict[str, tuple[int | None, float | None]]
"""Per judge: the request where it failed the candidate (or None), and when, if not that request's time."""


def error_judges(traffic: Traffic, share: float, arms: tuple[np.ndarray, np.ndarray]) -> tuple[Hits, list[Check]]:
    mw, checks = interval_judge(traffic, ERRORS_MW)
    kayenta = limits.kayenta_as_run(traffic.t, traffic.candidate, traffic.error.astype(float))
    hits: Hits = {"sequential": (sequential_errors(traffic), None), "mannwhitney": (mw, None),
                  "threshold": (interval_judge(traffic, ERRORS_THRESHOLD)[0], None),
                  KAYENTA: (limits.index_at(traffic.t, kayenta), kayenta),
                  "savvi": (limits.savvi_errors(arms, share, ERRORS_SEQ.alpha), None)}
    return hits, checks


def latency_judges(traffic: Traffic) -> tuple[Hits, list[Check]]:
    mw, checks = interval_judge(traffic, LATENCY_MW)
    kayenta = limits.kayenta_as_run(traffic.t, traffic.candidate, traffic.latency)
    hits: Hits = {"sequential": (sequential_latency(traffic), None), "mannwhitney": (mw, None),
                  "threshold": (interval_judge(traffic, latency_threshold(traffic.p99_baseline))[0], None),
                  KAYENTA: (limits.index_at(traffic.t, kayenta), kayenta)}
    return hits, checks


def crosscheck(scenario: Scenario, share: float, traffic: Traffic) -> int:
    """The numpy e-process against the real latency judge on a prefix of the run: the same request, or stop."""
    prefix = truncate(traffic, CROSSCHECK_REQUESTS)
    fast, real = sequential_latency(prefix), sequential_latency_real(prefix)
    if real != fast:
        raise SystemExit(f"{scenario.name} {share}: numpy e-process {fast} != judge {real}")
    return 1


def oracle_rows(scenario: Scenario, share: float, metrics: tuple[str, ...],
                found: dict[tuple[str, str], list[int | None]], arms: list[tuple[np.ndarray, np.ndarray]],
                medians: list[float]) -> list[dict[str, Any]]:
    """The oracle at `sequential`'s own error rates: α, and β its miss rate within the horizon (1 % to 50 %)."""
    if scenario.name == "A/A":
        return []
    metric = metrics[0]
    hits = found["sequential", metric]
    beta = min(0.5, max(0.01, 1 - sum(h is not None for h in hits) / len(hits)))
    alpha = ERRORS_SEQ.alpha
    if metric == "error-rate":
        runs = [limits.sprt_errors(a, share, scenario.error_ratio, alpha, beta, HORIZON) for a in arms]
        expected = float(np.mean([n for _, n in runs]))
        row = summarize(scenario, share, "oracle", metric, [h for h, _ in runs], [0] * len(runs))
    else:
        expected = limits.oracle_latency_requests(medians, SIGMA, scenario.shift_ms, scenario.tail, share,
                                                  alpha, beta)
        row = summarize(scenario, share, "oracle", metric, [None] * len(hits), [0] * len(hits))
        row["rate"] = 1 - beta
    row.update({"expected_requests": expected, "beta": beta})
    return [row]


def add_calibrated(results: list[dict[str, Any]], target: float) -> dict[str, float]:
    """Rows for mannwhitney replayed at the level where its A/A false-positive rate is `target`.

    Returns the level found per (metric, split).
    """
    levels: dict[tuple[str, float], float] = {}
    for res in results:
        if SCENARIOS[res["scenario"]].name == "A/A":
            for metric, runs in res["checks"].items():
                levels[metric, SPLITS[res["split"]]] = calibrated_alpha(runs, target)
    for res in results:
        scenario, share = SCENARIOS[res["scenario"]], SPLITS[res["split"]]
        for metric, runs in res["checks"].items():
            fails = [replay(run, levels[metric, share]) for run in runs]
            res["rows"].append(summarize(scenario, share, CALIBRATED, metric,
                                         [None if c is None else c.index for c in fails],
                                         [0 if c is None else c.errors for c in fails]))
    return {f"{m} {s * 100:g}/{100 - s * 100:g}": a for (m, s), a in levels.items()}


def summarize(scenario: Scenario, share: float, judge_name: str, metric: str, hits: list[int | None],
              events: list[int], times: list[float | None] | None = None) -> dict[str, Any]:
    detected = [h for h in hits if h is not None]
    reps = len(hits)
    requests = np.array([h + 1 for h in detected]) if detected else np.array([])
    if times is None:
        seconds = requests / RATE  # the mean rate: seconds are requests at RATE
    else:
        seconds = np.array([s for s, h in zip(times, hits, strict=True) if h is not None])
    bad = [share * (HORIZON if h is None else h + 1) for h in hits]
    ev = [e for e, h in zip(events, hits, strict=True) if h is not None]
    return {
        "scenario": scenario.name, "metric": metric, "split": f"{share * 100:g}/{100 - share * 100:g}",
        "share": share, "error_ratio": scenario.error_ratio,
        "judge": judge_name, "reps": reps, "rate": len(detected) / reps,
        "requests_p50": float(np.median(requests)) if detected else None,
        "requests_p90": float(np.percentile(requests, 90)) if detected else None,
        "seconds_p50": float(np.median(seconds)) if detected else None,
        "seconds_p90": float(np.percentile(seconds, 90)) if detected else None,
        "events_p50": float(np.median(ev)) if ev else None,
        "bad_p50": float(np.median(bad)),
        "hits": hits,
        "times": times if times is not None else [None if h is None else (h + 1) / RATE for h in hits],
    }


def requests_to_power(hits: list[int | None], power: float) -> float | None:
    """Requests by which a share `power` of the replications had been failed."""
    reached = sorted(h + 1 for h in hits if h is not None)
    need = math.ceil(power * len(hits) - 1e-9)  # a power read off these hits is a whole number of them
    if need == 0 or need > len(reached):
        return None
    return float(reached[need - 1])


def print_table(rows: list[dict[str, Any]]) -> None:
    def f(x: float | None, fmt: str = "{:,.0f}") -> str:
        return "-" if x is None else fmt.format(x)

    head = (f"{'scenario':<16} {'metric':<10} {'split':<6} {'judge':<14} {'reps':>5} {'FPR/power':>9} "
            f"{'req p50':>8} {'req p90':>8} {'s p50':>6} {'s p90':>6} {'errs p50':>8} {'bad p50':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['scenario']:<16} {r['metric']:<10} {r['split']:<6} {r['judge']:<14} {r['reps']:>5} "
              f"{r['rate']:>9.1%} {f(r['requests_p50']):>8} {f(r['requests_p90']):>8} "
              f"{f(r['seconds_p50']):>6} {f(r['seconds_p90']):>6} {f(r['events_p50']):>8} {f(r['bad_p50']):>8}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps-aa", type=int, default=1000, help="A/A replications per split")
    parser.add_argument("--reps", type=int, default=150, help="replications per regression and split")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="100 and 40 replications: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps_aa, args.reps = 100, 40
    jobs = [(i, s, args.reps_aa if sc.name == "A/A" else args.reps, 1000 * i + s)
            for i, sc in enumerate(SCENARIOS) for s in range(len(SPLITS))]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        results = pool.map(run_job, sorted(jobs, key=lambda j: -j[2]), chunksize=1)
    levels = add_calibrated(results, target=0.05)
    rows = [r for res in results for r in res["rows"]]
    order = {s.name: i for i, s in enumerate(SCENARIOS)}
    rows.sort(key=lambda r: (order[r["scenario"]], r["metric"], r["split"] != "50/50", JUDGES.index(r["judge"])))
    print(f"stagewise analysis benchmark: {HORIZON:,} requests per run at {RATE:g}/s, checks every "
          f"{INTERVAL:g}s for mannwhitney and threshold, sequential after every request; base error rate "
          f"{BASE_ERROR:.0%}; alpha 0.05 (sequential), 98% (mannwhitney), threshold max {2 * BASE_ERROR:.0%} "
          f"errors / p99 ≤ 1.25× baseline")
    print("FPR/power: share of runs Failed within the horizon (the false-positive rate in the A/A rows). "
          "req/s: requests and seconds to the Failed verdict, over failed runs; errs: error events (both arms) "
          "by then; bad: requests served by the candidate before the verdict (or the horizon).\n")
    print_table(rows)
    print("\nmannwhitney calibrated (mw@5%FPR): the level that gives it a 5% A/A false-positive rate here: "
          + ", ".join(f"{k} p < {v:.2g}" for k, v in sorted(levels.items())))
    print()
    print_comparisons(rows)
    print_limits(rows)
    gauges.main(args.reps_aa, args.reps)
    crosschecked = sum(r["crosschecked"] for r in results)
    print(f"\nlatency e-process (numpy) matched the real judge, request for request, on the first "
          f"{CROSSCHECK_REQUESTS:,} requests of {crosschecked} runs")
    print(f"wall time {time.perf_counter() - started:.0f}s on {args.workers} workers "
          f"(cpu {sum(r['seconds'] for r in results):.0f}s)")
    return 0


def at_power(a: float, b: float) -> float:
    """The power two judges are compared at: 80 % if both reach it, else 50 %, else the lower of theirs."""
    both = min(a, b)
    return next((p for p in (0.8, 0.5) if both >= p), both)


def np_power(m: int, q0: float, q1: float, level: float) -> float:
    """Power of the most powerful level-`level` test of Binomial(m, q0) against Binomial(m, q1 > q0).

    Neyman–Pearson: reject when k > c, and with probability γ when k = c
    (randomised, so that the level is spent exactly, to the test's favour).
    """
    if m == 0:
        return level

    def pmf(k: int, q: float) -> float:
        return math.exp(log_comb(m, k) + k * math.log(q) + (m - k) * math.log1p(-q))

    above0 = above1 = 0.0  # P(K > c) under q0 and q1, for c from m down
    for c in range(m, -1, -1):
        p0, p1 = pmf(c, q0), pmf(c, q1)
        if above0 + p0 > level:
            gamma = (level - above0) / p0
            return above1 + gamma * p1
        above0, above1 = above0 + p0, above1 + p1
    return 1.0


def best_possible(totals: list[list[int]], requests: float, share: float, ratio: float, level: float) -> float:
    """The power, after `requests` requests, that no test of error rates at that false-positive rate exceeds.

    An error event falls on the candidate with probability q = sρ / (sρ + 1 − s)
    (s the candidate's share of traffic, ρ its error-rate ratio) whatever the
    shared, drifting rate is; given the m events so far, the count on the
    candidate is Binomial(m, q). A test that must hold its level whatever the
    baseline's rate does can use no more than that (conditioning on m, the
    rate's sufficient statistic); the Neyman–Pearson test of q0 = s against the
    true q1 — a test that knows the effect in advance — is the most powerful one
    there. Averaged over the runs' own m at that many requests (rounded up to
    STRIDE: in the test's favour). It ignores what a request without an error
    says about the split (next to nothing at a 1 % error rate) and the 5 %
    spread between instances.
    """
    at = min(len(totals[0]), math.ceil(requests / STRIDE)) - 1
    q1 = share * ratio / (share * ratio + 1 - share)
    return float(np.mean([np_power(run[at], share, q1, level) for run in totals]))


def bound_for(seq_row: dict[str, Any], mw_row: dict[str, Any], level: float) -> tuple[str, bool]:
    """For an error-rate regression: mannwhitney's power and requests, the bound at a third of them, and
    whether that bound is below mannwhitney's power (3× fewer requests out of reach of any test)."""
    own = at_power(mw_row["rate"], mw_row["rate"])
    n_own = requests_to_power(mw_row["hits"], own)
    if n_own is None:
        return "", False
    bound = best_possible(seq_row["error_totals"], n_own / 3, seq_row["share"], seq_row["error_ratio"], level)
    text = f"{mw_row['judge']} reaches {own:.0%} at {n_own:,.0f}; any test at {n_own / 3:,.0f}: ≤ {bound:.0%}"
    return text, bound < own


def print_comparisons(rows: list[dict[str, Any]]) -> None:
    """sequential against mannwhitney, as Kayenta runs it and calibrated: requests to the power both reach."""

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:,.0f}"

    by = {(r["scenario"], r["metric"], r["split"], r["judge"]): r for r in rows}
    print("sequential vs mannwhitney: requests each needs until the share of runs failed reaches a power both\n"
          "reach within the horizon (80%, else 50%, else the smaller of the two), and how many times fewer\n"
          "sequential needs;"
          " each judge's A/A FPR beside it. mannwhitney as Kayenta runs it (98%), and calibrated to a 5% FPR.")
    met: list[str] = []
    missed: list[str] = []
    impossible: list[str] = []
    undetected: list[str] = []
    for s in rows:
        if s["judge"] != "sequential" or s["scenario"] == "A/A":
            continue
        key = (s["scenario"], s["metric"], s["split"])
        fpr_seq = by[("A/A", key[1], key[2], "sequential")]["rate"]
        parts = []
        bounds: list[str] = []
        out_of_reach = blind = 0
        best = 0.0
        for name in ("mannwhitney", CALIBRATED):
            r = by[(*key, name)]
            fpr = by[("A/A", key[1], key[2], name)]["rate"]
            power = at_power(r["rate"], s["rate"])
            n_mw, n_seq = requests_to_power(r["hits"], power), requests_to_power(s["hits"], power)
            ratio = n_mw / n_seq if n_mw and n_seq else None
            if ratio is not None and fpr_seq <= fpr and power >= 2 * fpr:  # else "detections" are mostly noise
                best = max(best, ratio)
            blind += r["rate"] <= fpr
            parts.append(f"{name} {f(n_mw):>6} (power {r['rate']:4.0%}, FPR {fpr:4.1%}) "
                         f"{'-' if ratio is None else f'{ratio:.1f}×':>5} at {power:4.0%}")
            if "error_totals" in s:
                text, beyond = bound_for(s, r, max(fpr, fpr_seq))
                bounds += [text] if text else []
                out_of_reach += beyond
        label = f"{key[0]} {key[2]}"
        if best >= 3.0:
            met.append(label)
        elif blind == 2:
            undetected.append(f"{label} (sequential {s['rate']:.0%})")
        else:
            missed.append(label)
        if out_of_reach == 2:
            impossible.append(label)
        print(f"  {key[0]:<15} {key[2]:<5} sequential power {s['rate']:4.0%} (FPR {fpr_seq:4.1%}) | "
              + " | ".join(parts))
        if bounds:
            print(f"  {'':<21} {' | '.join(bounds)}")
    total = len(met) + len(missed) + len(undetected)
    print(f"\n≥3× fewer requests than mannwhitney at an equal or lower FPR, at a power at least twice that FPR: "
          f"{len(met)} of {total} regressions: {', '.join(met) or 'none'}")
    print(f"mannwhitney does not detect them (power no higher than its A/A FPR): {', '.join(undetected) or 'none'}")
    print(f"not met: {', '.join(missed) or 'none'}")
    print("error rates, second line: the power of the most powerful test there is (Neyman–Pearson, knowing the\n"
          "effect, valid whatever the baseline's error rate does) after a third of mannwhitney's requests, at\n"
          "mannwhitney's false-positive rate: below mannwhitney's power, no judge can be 3× faster.")
    print(f"out of reach of any test, against both mannwhitney runs: {len(impossible)} of {len(missed)} not met: "
          f"{', '.join(impossible) or 'none'}")


def seconds_to_power(row: dict[str, Any], power: float) -> float | None:
    """Seconds by which a share `power` of the replications had been failed."""
    times = sorted(t for t, h in zip(row["times"], row["hits"], strict=True) if h is not None and t is not None)
    need = math.ceil(power * len(row["hits"]) - 1e-9)
    return times[need - 1] if 0 < need <= len(times) else None


def print_ratios(rows: list[dict[str, Any]], by: dict[tuple[str, str, str, str], dict[str, Any]]) -> None:
    """Every judge's median requests to detection as a multiple of the oracle's E[N] (its power beside it)."""
    names = [j for j in JUDGES if j != "oracle"]
    print("\nmedian requests to detection / oracle E[N], each judge (its power; '-' below 50 % power):")
    print(f"{'scenario':<16} {'split':<6} " + " ".join(f"{j:>16}" for j in names))
    for s in rows:
        if s["judge"] != "sequential" or s["scenario"] == "A/A":
            continue
        key = (s["scenario"], s["metric"], s["split"])
        expected = by[(*key, "oracle")]["expected_requests"]
        cells = []
        for name in names:
            r = by.get((*key, name))
            if r is None:
                cells.append(f"{'':>16}")
                continue
            ratio = f"{r['requests_p50'] / expected:.2f}" if r["requests_p50"] and r["rate"] >= 0.5 else "-"
            power = f"{r['rate']:.0%}"
            cells.append(f"{ratio} ({power})".rjust(16))
        print(f"{key[0]:<16} {key[2]:<6} " + " ".join(cells))


def print_limits(rows: list[dict[str, Any]]) -> None:
    """sequential against the limit (the oracle), Kayenta as users run it, and savvi."""

    def f(x: float | None, fmt: str = "{:,.0f}") -> str:
        return "-" if x is None else fmt.format(x)

    by = {(r["scenario"], r["metric"], r["split"], r["judge"]): r for r in rows}
    print("\nMeasured against the limit. oracle: Wald's SPRT told the true effect, at α 0.05 and β = sequential's\n"
          "miss rate (1–50 %): E[N] requests (error rates: run on the simulated events; latency: Wald's bound for\n"
          "an oracle told the baseline's distribution). ×oracle: sequential's median requests / E[N] (goal ≤ 2).\n"
          "kayenta-as-run: NetflixACAJudge on one value per release per minute, judged every 5 minutes, 98 %;\n"
          "seconds compared at the power both reach (80 %, else 50 %). savvi: its canary test on the same events.")
    head = (f"{'scenario':<16} {'split':<6} {'seq power':>9} {'seq req':>8} {'oracle E[N]':>11} {'×oracle':>8} "
            f"{'kayenta power':>13} {'at':>4} {'seq s':>6} {'kay s':>6} {'savvi power':>11} {'savvi req':>9}")
    print(head)
    print("-" * len(head))
    near, far, sooner, later, undecided = [], [], [], [], []
    for s in rows:
        if s["judge"] != "sequential" or s["scenario"] == "A/A":
            continue
        key = (s["scenario"], s["metric"], s["split"])
        label = f"{key[0]} {key[2]}"
        oracle, kay = by[(*key, "oracle")], by[(*key, KAYENTA)]
        savvi = by.get((*key, "savvi"))
        ratio = s["requests_p50"] / oracle["expected_requests"] if s["requests_p50"] and s["rate"] >= 0.5 else None
        if ratio is not None and ratio <= 2:
            near.append(f"{label} {ratio:.1f}×")
        else:
            far.append(f"{label} {f(ratio, '{:.1f}×')}" if ratio else f"{label} (power {s['rate']:.0%})")
        power = at_power(s["rate"], kay["rate"])
        seq_s, kay_s = seconds_to_power(s, power), seconds_to_power(kay, power)
        if power < 0.5 or seq_s is None or kay_s is None:
            undecided.append(f"{label} (kayenta power {kay['rate']:.0%})")
        else:
            (sooner if seq_s < kay_s else later).append(f"{label} {seq_s:,.0f}s vs {kay_s:,.0f}s")
        print(f"{key[0]:<16} {key[2]:<6} {s['rate']:>9.1%} {f(s['requests_p50']):>8} "
              f"{f(oracle['expected_requests']):>11} {f(ratio, '{:.2f}'):>8} {kay['rate']:>13.1%} "
              f"{power:>4.0%} {f(seq_s):>6} {f(kay_s):>6} "
              f"{'-' if savvi is None else format(savvi['rate'], '.1%'):>11} "
              f"{'-' if savvi is None else f(savvi['requests_p50']):>9}")
    print_ratios(rows, by)
    fpr = {(r["metric"], r["split"], r["judge"]): r["rate"] for r in rows if r["scenario"] == "A/A"}
    print("\nA/A false-positive rates: " + ", ".join(
        f"{j} {m} {sp} {v:.1%}" for (m, sp, j), v in sorted(fpr.items()) if j in ("sequential", KAYENTA, "savvi")))
    print(f"sequential within 2× of the oracle: {len(near)} of {len(near) + len(far)}: {', '.join(near) or 'none'}")
    print(f"  not within 2×: {', '.join(far) or 'none'}")
    print(f"sequential before kayenta-as-run (both detect): {len(sooner)} of {len(sooner) + len(later)}; "
          f"later: {', '.join(later) or 'none'}")
    print(f"  not detected by both (power < 50 %): {', '.join(undecided) or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
