"""sequential, value: an anytime-valid test that a gauge's mean moved on the candidate.

What it is for. The router's counts say whether users got errors or waited;
a team also watches its own gauges during a canary — CPU seconds per request,
memory, queue length, a business score — one value per release and scrape.
This judge decides, after every scrape, whether the candidate's mean is
shifted from the baseline's, without the extra false alarms a fixed-sample
test gathers by being looked at again and again.

The method: testing by betting (Shafer 2021; Waudby-Smith & Ramdas, "Estimating
means of bounded random variables by betting", JRSS-B 2024), the nonnegative
supermartingale behind their betting confidence sequences. Each scrape gives a
*pair* (b_t, c_t): the baseline's and the candidate's value measured at the
same moment (a release with several instances gives the mean of its
instances). With the margin m (relative: 0.1 allows the candidate's mean 10 %
above the baseline's), direction `increase` tests

    H0: E[c_t − (1+m)·b_t | everything before t] ≤ 0   for every t,

`decrease` tests E[(1−m)·b_t − c_t | before] ≤ 0, and `either` both. Write
D_t for that difference. Every value is clipped into `bounds` [lo, hi], so D_t
is bounded below by −A (A = (1+m)·hi − lo for an increase, hi − (1−m)·lo for a
decrease) and X_t = D_t / A ≥ −1. A bettor stakes a share λ_t ∈ [0, 0.9] of
its wealth on X_t, chosen *before* the pair is seen: wealth K_t = Π (1 + λ_i X_i)
stays positive.
Under H0 each factor has expectation at most 1, so K is a nonnegative
supermartingale from 1, and by Ville's inequality P(sup_t K_t ≥ 1/α) ≤ α:
however often the judge looks and whenever it stops. `either` averages the
two directions' wealth — an average of e-processes under both nulls is one.

The bets: online Newton step (Cutkosky & Orabona 2018, as in Shekhar &
Ramdas 2023 and Chugg et al. 2023): λ_{t+1} = clip(λ_t + c·z_t / a_t, 0, 0.9)
with z_t = X_t / (1 + λ_t X_t), a_t = 1 + Σ z_i², c = 2 / (2 − ln 3). Its
wealth is within a polynomial factor of the best constant bet's in hindsight,
whatever the data, so the test adapts to the gauge's real spread as long as
the best bet is below the cap. The cap is the price of assuming nothing but
the bounds: a gauge whose spread is small against its bounds would deserve a
larger stake than 0.9, which no bounded test may make (a value at the far
bound must not ruin the bettor). On the benchmark's CPU share (0.4 ± 0.04
within [0, 1]) an oracle told the Gaussian noise needs about a tenth of the
pairs; the tighter the honest bounds, the smaller that gap. (The cap was ½ in
the literature's analysis of the step; 0.9 keeps every factor above 0.1 and
found a 5 % shift in 83 % of the benchmark's runs instead of 0 %.)

What must hold, and what breaks it.
- Bounded values, with bounds known before the data: without a bound no test
  of means is valid at any sample size (Bahadur & Savage 1956). A value outside
  is clipped, and counted in the evidence: the test is then of clipped means.
- Pairs unbiased given the past: the *difference* may drift with load (both
  arms see the same traffic at the same time: pairing removes it), but a
  gauge whose two arms wander apart and stay apart for a while by chance
  (strong autocorrelation, one slow instance) looks like a shift. The margin
  is the tolerance for that; the benchmark prints the A/A rate with it.
- One pair per scrape: reading the same scraped sample twice counts it twice;
  the provider asks at its interval, which should be no shorter than the
  scrape interval.

State: per direction the log-wealth, the bet and the Newton step's curvature,
and the sums of the paired values for the evidence — a few numbers, whatever
the run's length. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from typing import Any

from stagewise.analysis.judges import sequential as seq
from stagewise.core.judge_state import Bet, JudgeState, ValueState
from stagewise.core.spec import AnalysisTemplate
from stagewise.core.verdict import Outcome, Verdict

DEFAULT_MARGIN = 0.0
"""Value margin when the template gives none: any shift in the tested direction counts."""
MAX_BET = 0.9
"""The largest share of wealth staked: a pair at the worst end of the bounds leaves a tenth of it."""
ONS_STEP = 2.0 / (2.0 - math.log(3.0))
DIRECTIONS = {"increase": ("increase",), "decrease": ("decrease",), "either": ("increase", "decrease")}
FRESH = Bet(log_wealth=0.0, bet=0.0, curvature=1.0)


def loss_scale(direction: str, margin: float, lo: float, hi: float) -> float:
    """A: the most a pair's difference can fall below 0 within the bounds, so that X = D / A ≥ −1."""
    worst = min(difference(direction, margin, b, c) for b in (lo, hi) for c in (lo, hi))
    return max(-worst, 1e-12)


def difference(direction: str, margin: float, baseline: float, candidate: float) -> float:
    """D: positive when the pair points to the alternative of `direction`."""
    if direction == "increase":
        return candidate - (1.0 + margin) * baseline
    return (1.0 - margin) * baseline - candidate


def place(bet: Bet, x: float) -> Bet:
    """The bettor's wealth after outcome x ≥ −1, and its next bet (online Newton step)."""
    factor = 1.0 + bet.bet * x
    z = x / factor
    curvature = bet.curvature + z * z
    following = min(MAX_BET, max(0.0, bet.bet + ONS_STEP * z / curvature))
    return Bet(log_wealth=bet.log_wealth + math.log(factor), bet=following, curvature=curvature)


class Tally:
    """The judge's running numbers, mutable while a look folds its pairs; `ValueState` between looks."""

    def __init__(self, state: ValueState) -> None:
        self.samples = list(state.samples)
        self.pairs = state.pairs
        self.sums = list(state.sums)
        self.squares = list(state.squares)
        self.clipped = state.clipped
        self.bets = list(state.bets)
        self.max_log_e = state.max_log_e
        self.directions = DIRECTIONS[state.direction]
        self.margin = state.margin
        self.lo, self.hi = state.bounds
        self.scales = [loss_scale(d, self.margin, self.lo, self.hi) for d in self.directions]

    def clip(self, value: float) -> float:
        if self.lo <= value <= self.hi:
            return value
        self.clipped += 1
        return min(self.hi, max(self.lo, value))

    def add(self, baseline: float | None, candidate: float | None) -> None:
        """One scrape: a value per release, or None for a release without one (then no pair)."""
        self.samples = [n + (v is not None) for n, v in zip(self.samples, (baseline, candidate), strict=True)]
        if baseline is None or candidate is None:
            return
        b, c = self.clip(baseline), self.clip(candidate)
        self.pairs += 1
        self.sums = [self.sums[0] + b, self.sums[1] + c]
        self.squares = [self.squares[0] + b * b, self.squares[1] + c * c]
        self.bets = [place(bet, difference(d, self.margin, b, c) / a)
                     for bet, d, a in zip(self.bets, self.directions, self.scales, strict=True)]
        self.max_log_e = max(self.max_log_e, self.log_e)

    @property
    def log_e(self) -> float:
        return seq.log_mean_exp([bet.log_wealth for bet in self.bets])

    def state(self, direction: str, verdict: Verdict | None) -> ValueState:
        return ValueState(margin=self.margin, direction=direction, bounds=(self.lo, self.hi),
                          samples=(self.samples[0], self.samples[1]), pairs=self.pairs,
                          sums=(self.sums[0], self.sums[1]), squares=(self.squares[0], self.squares[1]),
                          clipped=self.clipped, bets=tuple(self.bets), max_log_e=self.max_log_e, verdict=verdict)


def fresh_state(template: AnalysisTemplate) -> ValueState:
    """The state before the first pair: every bettor at wealth 1, staking nothing yet."""
    margin = template.margin if template.margin is not None else DEFAULT_MARGIN
    bounds = template.bounds
    lo, hi = (bounds.min, bounds.max) if bounds is not None else (-math.inf, math.inf)
    return ValueState(margin=margin, direction=template.direction, bounds=(lo, hi), samples=(0, 0), pairs=0,
                      sums=(0.0, 0.0), squares=(0.0, 0.0), clipped=0,
                      bets=tuple(FRESH for _ in DIRECTIONS[template.direction]), max_log_e=0.0)


def load(template: AnalysisTemplate, state: JudgeState | None) -> ValueState:
    """The state to continue from: the one given if it tests the same null, else a fresh one."""
    fresh = fresh_state(template)
    if isinstance(state, ValueState) and (state.margin, state.direction, state.bounds) == (
            fresh.margin, fresh.direction, fresh.bounds):
        return state
    return fresh


def judge_value(
    template: AnalysisTemplate,
    state: JudgeState | None,
    *,
    values: tuple[float | None, float | None] | None,
    elapsed: float,
    duration: float | None,
) -> tuple[ValueState, Verdict]:
    """Fold this scrape's pair (if any) into the bets; say what they show."""
    kept = load(template, state)
    if kept.verdict is not None:
        return kept, kept.verdict
    tally = Tally(kept)
    if values is not None:
        tally.add(*values)
    return conclude(template, tally, elapsed=elapsed, duration=duration)


def conclude(
    template: AnalysisTemplate, tally: Tally, *, elapsed: float, duration: float | None
) -> tuple[ValueState, Verdict]:
    """The verdict of the bets as they stand, and the state that repeats it when final."""
    log_e = tally.log_e
    bound = 1.0 / template.alpha
    lacking = min(tally.samples) < template.min_samples
    counted = (tally.samples[0], tally.samples[1]) if lacking else (tally.pairs, tally.pairs)
    outcome, lack = seq.decide(template, detected=log_e >= math.log(bound), requests=counted,
                               elapsed=elapsed, duration=duration, unit="samples")
    evidence = _evidence(template, tally, log_e)
    if lack:
        evidence["no_data"] = template.no_data
    message = lack or _sentence(template, tally, outcome, log_e)
    verdict = Verdict(outcome=outcome, message=message, evidence=evidence)
    return tally.state(template.direction, verdict if seq.finished(outcome) else None), verdict


def means(tally: Tally) -> tuple[float | None, float | None]:
    if not tally.pairs:
        return None, None
    return tally.sums[0] / tally.pairs, tally.sums[1] / tally.pairs


def _evidence(template: AnalysisTemplate, tally: Tally, log_e: float) -> dict[str, Any]:
    mean_b, mean_c = means(tally)
    return {
        "judge": "sequential",
        "metric": "value",
        "e_value": seq.e_value(log_e),
        "threshold": 1.0 / template.alpha,
        "p_value": seq.p_value(tally.max_log_e),
        "alpha": template.alpha,
        "direction": template.direction,
        "margin": tally.margin,
        "bounds": [tally.lo, tally.hi],
        "mean": {"baseline": mean_b, "candidate": mean_c},
        "sd": {"baseline": _sd(tally, 0), "candidate": _sd(tally, 1)},
        "e_values": {d: seq.e_value(b.log_wealth) for d, b in zip(tally.directions, tally.bets, strict=True)},
        "pairs": tally.pairs,
        "samples": {"baseline": tally.samples[0], "candidate": tally.samples[1]},
        "clipped": tally.clipped,
        "min_samples": template.min_samples,
    }


def _sd(tally: Tally, arm: int) -> float | None:
    n = tally.pairs
    if n < 2:
        return None
    variance = (tally.squares[arm] - tally.sums[arm] ** 2 / n) / (n - 1)
    return math.sqrt(max(0.0, variance))


def _sentence(template: AnalysisTemplate, tally: Tally, outcome: Outcome, log_e: float) -> str:
    mean_b, mean_c = means(tally)
    bound = 1.0 / template.alpha
    pairs = f"after {tally.pairs:,} pairs"
    if mean_b is None or mean_c is None:
        return f"no pair of values yet, e-value 1 (fails at {bound:g})"
    shift = f" ({mean_c / mean_b - 1:+.1%})" if mean_b > 0 else ""
    means_text = f"candidate mean {mean_c:.4g} vs baseline {mean_b:.4g}{shift}"
    ev = seq.fmt_e(seq.e_value(log_e))
    if outcome is Outcome.FAILED:
        worst = max(zip(tally.directions, tally.bets, strict=True), key=lambda db: db[1].log_wealth)[0]
        return f"{means_text}: {_shifted(worst, tally.margin)}, e-value {ev} ≥ 1/α = {bound:g} {pairs}"
    if outcome is Outcome.SUCCESSFUL:
        tested = " or ".join(_shifted(d, tally.margin) for d in tally.directions)
        return f"{means_text}: no evidence it is {tested} (e-value {ev} < 1/α = {bound:g}) {pairs}"
    return f"{means_text}, e-value {ev} (fails at {bound:g}) {pairs}"


def _shifted(direction: str, margin: float) -> str:
    if direction == "increase":
        return f"more than {1 + margin:g}× the baseline's" if margin else "higher than the baseline's"
    return f"less than {1 - margin:g}× the baseline's" if margin else "lower than the baseline's"
