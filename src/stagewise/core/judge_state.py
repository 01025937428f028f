"""What each judge remembers between two looks, as typed, immutable records.

A judge is a pure function of its previous state and an increment
(`stagewise.analysis.judges`); the state is stored in the delivery on every
tick (`AnalysisRun.judge_state`), so that a controller restart resumes an
analysis where it was. One record per judge, told apart by `kind` — the
JSON the store keeps has the same keys the judges have always written, so a
stored delivery reads back whatever version wrote it; a state of a kind no
judge makes any more (an older latency judge's) is dropped on reading, and
the judge starts afresh, as it would have.

Frozen dataclasses: a judge returns a new record and never changes the one
it was given. Pure data: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from stagewise.core.stats import ReleaseStats
from stagewise.core.verdict import Verdict

Pair = tuple[int, int]
"""Baseline, candidate."""


@dataclass(frozen=True, kw_only=True)
class ErrorRateState:
    """The sequential error-rate judge: one log-likelihood-ratio sum per alternative of its grid."""

    kind: Literal["sequential/error-rate"] = "sequential/error-rate"
    rho0: float
    """The null's error-rate ratio (1 + margin) the sums test."""
    requests: Pair
    errors: Pair
    llr: tuple[float, ...]
    max_log_e: float
    """Largest log e-value seen (for the p-value)."""
    pending: tuple[int, ...] = ()
    """Counts held back until both arms have shown up."""
    verdict: Verdict | None = None
    """The final verdict, once there is one: repeated on every later look."""


@dataclass(frozen=True, kw_only=True)
class LatencyState:
    """The sequential latency judge: per latency threshold (rung), one sum per odds ratio of its grid."""

    kind: Literal["sequential/latency/4"] = "sequential/latency/4"
    """/4: odds ratios of the exact conditional law, over active rungs, ψ1 up to 5·ψ0 (an older state restarts)."""
    rho0: float
    rungs: tuple[int, ...]
    """Histogram bounds tested, as indexes."""
    hist: tuple[tuple[int, ...], tuple[int, ...]]
    """Cumulative latency histograms, baseline and candidate."""
    llr: tuple[tuple[float, ...], ...]
    log_e: float
    seen: tuple[int, ...]
    """Events per rung so far (a rung joins the test once it has seen one)."""
    max_log_e: float
    pending: tuple[int, ...] = ()
    verdict: Verdict | None = None
    rung_lse: Annotated[tuple[float, ...] | None, Field(exclude=True)] = field(default=None, compare=False,
                                                                               repr=False)
    """Each rung's log-sum-exp of `llr`, as the judge computed it: the next look starts from it instead of
    summing every rung again (most of a look's cost). Never stored, never compared: it follows from `llr`."""


@dataclass(frozen=True, kw_only=True)
class Bet:
    """One direction's betting e-process of the sequential value judge."""

    log_wealth: float
    """log of the wealth: the e-value of this direction."""
    bet: float
    """The share of wealth staked on the next pair (fixed before it is seen)."""
    curvature: float
    """1 + the sum of squared gradients so far: online Newton step's memory."""


@dataclass(frozen=True, kw_only=True)
class ValueState:
    """The sequential value judge: one betting e-process per tested direction, and the samples' sums."""

    kind: Literal["sequential/value"] = "sequential/value"
    margin: float
    direction: str
    bounds: tuple[float, float]
    """The range the values were clipped into; with the margin and the direction, what the bets test."""
    samples: Pair
    """Values seen per release (a pair needs both)."""
    pairs: int
    sums: tuple[float, float]
    """Sums of the paired values (after clipping), baseline and candidate."""
    squares: tuple[float, float]
    clipped: int
    """Values that fell outside the bounds."""
    bets: tuple[Bet, ...]
    """increase, or decrease, or both (direction either), in that order."""
    max_log_e: float
    verdict: Verdict | None = None


@dataclass(frozen=True, kw_only=True)
class Checks:
    """The schedule of a judge that checks once per interval (threshold, mannwhitney)."""

    count: int
    """Checks that had data."""
    failed: int
    empty: int
    """Checks without data."""
    next_at: float
    last_at: float
    """When the last check ran (-1: never)."""
    recent: tuple[dict[str, Any], ...]
    """The last checks, newest last: t, failed, value."""
    verdict: Verdict | None = None


@dataclass(frozen=True, kw_only=True)
class ThresholdState(Checks):
    kind: Literal["threshold/error-rate", "threshold/latency"]
    window: ReleaseStats
    """The candidate's requests since the last check that had data."""
    requests: Pair


@dataclass(frozen=True, kw_only=True)
class MannWhitneyState(Checks):
    kind: Literal["mannwhitney/error-rate", "mannwhitney/latency"]
    hist: tuple[tuple[int, ...], tuple[int, ...]]
    """Cumulative histograms of the metric, baseline and candidate."""
    sums: tuple[float, float]
    """Sums of latencies (ms), for the mean ratio."""


JudgeState = Annotated[
    ErrorRateState | LatencyState | ValueState | ThresholdState | MannWhitneyState,
    Field(discriminator="kind"),
]
"""Any judge's state."""

JUDGE_KINDS = frozenset({"sequential/error-rate", "sequential/latency/4", "sequential/value", "threshold/error-rate",
                         "threshold/latency", "mannwhitney/error-rate", "mannwhitney/latency"})
"""The kinds of state the judges make now."""


@dataclass(frozen=True, kw_only=True)
class ProviderNote:
    """What the provider of a template last said: when, its evidence, and the error if it could not measure."""

    at: float
    evidence: dict[str, Any]
    error: str | None = None


JUDGE_STATE: TypeAdapter[ErrorRateState | LatencyState | ValueState | ThresholdState | MannWhitneyState] = (
    TypeAdapter(JudgeState))
"""Reads and writes a judge's state as JSON (`JUDGE_STATE.dump_python(state, mode="json")`)."""
