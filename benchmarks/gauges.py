"""The sequential value judge on simulated gauges: A/A false alarms, power, the oracle, Kayenta as run, k = 5.

A gauge (a CPU share) is scraped every SCRAPE seconds for an hour: four
baseline instances and one canary instance, each reading 0.4 × the load
curve (±30 % over the hour) plus noise (sd 0.04); a release's value per
scrape is the mean of its instances, bounds [0, 1]. The judge sees one pair
per scrape and is looked at after every pair.

- A/A: both releases alike — the judge's null holds exactly (margin 0).
- A/A, instances differ: each instance keeps its own level (lognormal, 2 %), so
  the canary's mean is a little off the baseline's by chance, as real
  instances are; judged at margin 0.05, the tolerance for that.
- Regressions: the canary reads 5 %, 10 %, 25 % more.
- The oracle: Wald's bound for an SPRT told the shift and the noise (Gaussian
  pair differences), at α 0.05 and β the judge's miss rate (1–50 %).
- Kayenta as users run it: one value per release per minute (the mean of
  its scrapes), NetflixACAJudge every five minutes at 98 % (limits.py).
- k = 5: five independent A/A gauges in one analysis, each at α/5
  (Bonferroni on e-values): a run false-alarms if any of them does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import limits
import numpy as np

from stagewise.analysis.judges.sequential_value import Tally, fresh_state
from stagewise.core.spec import PrometheusTemplate

SCRAPE = 15.0
PAIRS = 240
"""An hour of scrapes."""
LEVEL, SWING, NOISE = 0.4, 0.3, 0.04
BASELINE_INSTANCES = 4


def template(margin: float = 0.0, alpha: float = 0.05) -> PrometheusTemplate:
    return PrometheusTemplate(provider="prometheus", address="http://127.0.0.1:9090", query="cpu", metric="value",
                              bounds={"min": 0, "max": 1}, margin=margin, alpha=alpha)


@dataclass(frozen=True)
class Case:
    name: str
    factor: float = 1.0
    spread: float = 0.0
    """Per-instance level: lognormal sd (0: instances alike)."""
    margin: float = 0.0


CASES = [Case("A/A"), Case("A/A, instances differ", spread=0.02, margin=0.05),
         *(Case(f"gauge +{100 * (f - 1):g}%", factor=f) for f in (1.05, 1.1, 1.25))]


def simulate(rng: np.random.Generator, case: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scrape times and the baseline's and candidate's value per scrape."""
    t = np.arange(PAIRS) * SCRAPE
    curve = 1 + SWING * np.sin(2 * math.pi * (t / (PAIRS * SCRAPE) + rng.uniform()))
    levels = rng.lognormal(0.0, case.spread, BASELINE_INSTANCES + 1) if case.spread else np.ones(5)
    noise = rng.normal(0.0, NOISE, (PAIRS, BASELINE_INSTANCES + 1))
    readings = np.clip(LEVEL * curve[:, None] * levels[None, :] + noise, 0.0, 1.0)
    baseline = readings[:, :BASELINE_INSTANCES].mean(axis=1)
    candidate = np.clip(readings[:, BASELINE_INSTANCES] * case.factor, 0.0, 1.0)
    return t, baseline, candidate


def first_alarm(baseline: np.ndarray, candidate: np.ndarray, margin: float, alpha: float = 0.05) -> int | None:
    """The pair after which the judge's e-value first reaches 1/α, looked at after every pair."""
    tally = Tally(fresh_state(template(margin, alpha)))
    bound = math.log(1 / alpha)
    for i, (b, c) in enumerate(zip(baseline.tolist(), candidate.tolist(), strict=True)):
        tally.add(b, c)
        if tally.log_e >= bound:
            return i
    return None


def wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def oracle_pairs(case: Case, beta: float, alpha: float = 0.05) -> float:
    """Wald's bound on the expected pairs of an SPRT told the shift and the pair differences' Gaussian noise."""
    phase = np.linspace(0, 1, 1000, endpoint=False)
    delta = LEVEL * (1 + SWING * np.sin(2 * math.pi * phase)) * (case.factor - 1)
    sd = NOISE * math.sqrt(case.factor**2 + 1 / BASELINE_INSTANCES)
    kl = float(np.mean(delta**2)) / (2 * sd * sd)
    return limits.wald_numerator(alpha, beta) / kl


def run_case(case: Case, reps: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    hits: list[int | None] = []
    kayenta: list[float | None] = []
    for _ in range(reps):
        t, baseline, candidate = simulate(rng, case)
        hits.append(first_alarm(baseline, candidate, case.margin))
        both = np.concatenate([t, t])
        order = np.argsort(both, kind="stable")
        arms = np.r_[np.zeros(PAIRS, bool), np.ones(PAIRS, bool)][order]
        kayenta.append(limits.kayenta_as_run(both[order] + 1e-9, arms, np.r_[baseline, candidate][order]))
    found = [h for h in hits if h is not None]
    return {"case": case, "reps": reps, "rate": len(found) / reps,
            "pairs_p50": float(np.median(np.array(found) + 1)) if found else None,
            "kayenta_rate": sum(k is not None for k in kayenta) / reps,
            "kayenta_s": sorted(k for k in kayenta if k is not None),
            "seq_s": sorted((h + 1) * SCRAPE for h in found)}


def k_metrics(reps: int, k: int, seed: int) -> int:
    """A/A runs of k independent gauges, each judged at α/k: how many runs false-alarmed."""
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(reps):
        alarms += any(first_alarm(*simulate(rng, CASES[0])[1:], margin=0.0, alpha=0.05 / k) is not None
                      for _ in range(k))
    return alarms


def main(reps_aa: int, reps: int) -> None:
    started = time.perf_counter()
    print(f"\nGauges: the sequential value judge, one pair per {SCRAPE:g}s scrape for an hour ({PAIRS} pairs), "
          "looked at after every pair;\nbaseline 4 instances, canary 1, CPU share 0.4 ± load ± noise, bounds [0, 1]. "
          "oracle: Wald's bound, told the shift and the noise.")
    head = (f"{'case':<22} {'margin':>6} {'reps':>5} {'FPR/power':>9} {'95% interval':>14} {'pairs p50':>9} "
            f"{'oracle E[N]':>11} {'×oracle':>7} {'kayenta':>8} {'seq s':>6} {'kay s':>6}")
    print(head)
    print("-" * len(head))
    for i, case in enumerate(CASES):
        r = run_case(case, reps_aa if case.factor == 1.0 else reps, 5000 + i)
        print_case(r)
    alarms = k_metrics(reps_aa, 5, 9000)
    low, high = wilson(alarms, reps_aa)
    print(f"k = 5 A/A gauges in one analysis, each at α/5: {alarms}/{reps_aa} runs false-alarmed = "
          f"{alarms / reps_aa:.1%} (95 % interval {low:.1%}–{high:.1%}); bound α = 5 %")
    print(f"gauges: {time.perf_counter() - started:.0f}s")


def print_case(r: dict[str, Any]) -> None:
    case: Case = r["case"]
    low, high = wilson(round(r["rate"] * r["reps"]), r["reps"])
    oracle = ratio = None
    if case.factor != 1.0:
        oracle = oracle_pairs(case, min(0.5, max(0.01, 1 - r["rate"])))
        ratio = r["pairs_p50"] / oracle if r["pairs_p50"] and r["rate"] >= 0.5 else None
    power = min(r["rate"], r["kayenta_rate"])
    at = next((p for p in (0.8, 0.5) if power >= p), None)

    def when(times: list[float]) -> str:
        need = math.ceil((at or 0) * r["reps"] - 1e-9)
        return f"{times[need - 1]:,.0f}" if at and 0 < need <= len(times) else "-"

    def fmt(x: float | None, spec: str = "{:,.0f}") -> str:
        return "-" if x is None else spec.format(x)

    print(f"{case.name:<22} {case.margin:>6g} {r['reps']:>5} {r['rate']:>9.1%} {f'{low:.1%}–{high:.1%}':>14} "
          f"{fmt(r['pairs_p50']):>9} {fmt(oracle):>11} {fmt(ratio, '{:.2f}'):>7} {r['kayenta_rate']:>8.1%} "
          f"{when(r['seq_s']):>6} {when(r['kayenta_s']):>6}")
