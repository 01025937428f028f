"""Verdicts: what a judge says about a candidate, always with its evidence."""

from __future__ import annotations

import math
from enum import Enum, StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class Outcome(StrEnum):
    RUNNING = "Running"
    """Not decided yet."""
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    NO_DATA = "NoData"


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    outcome: Outcome
    message: str = ""
    """One sentence a person can read: what was measured and what it means."""
    evidence: dict[str, Any] = {}
    """Statistic, p-value or e-value, effect and interval, sample sizes."""

    @property
    def decided(self) -> bool:
        return self.outcome is not Outcome.RUNNING


def combine(verdicts: list[Verdict]) -> Verdict:
    """One verdict for several metrics: any failure fails; all must pass to pass."""
    if not verdicts:
        return Verdict(outcome=Outcome.SUCCESSFUL, message="no metrics to judge")
    for outcome in (Outcome.FAILED, Outcome.NO_DATA, Outcome.INCONCLUSIVE, Outcome.RUNNING):
        hits = [v for v in verdicts if v.outcome is outcome]
        if hits:
            return Verdict(
                outcome=outcome,
                message="; ".join(v.message for v in hits),
                evidence={"metrics": [as_json(v) for v in verdicts]},
            )
    return Verdict(
        outcome=Outcome.SUCCESSFUL,
        message="; ".join(v.message for v in verdicts),
        evidence={"metrics": [as_json(v) for v in verdicts]},
    )


def as_json(verdict: Verdict) -> dict[str, Any]:
    """`verdict.model_dump(mode="json")`, made by hand for the plain values judges put in evidence.

    A run's verdict combines its templates' on every look of every run in flight; pydantic's dump was
    most of that. Anything but plain values (dicts, lists, tuples, strings, numbers, enums, None) goes
    through pydantic as before.
    """
    try:
        evidence = _plain(verdict.evidence)
    except _NotPlain:
        return verdict.model_dump(mode="json")
    return {"outcome": verdict.outcome.value, "message": verdict.message, "evidence": evidence}


class _NotPlain(Exception):
    """A value `_plain` leaves to pydantic."""


def _plain(value: Any) -> Any:
    """What pydantic's JSON mode makes of a plain value: tuples as lists, enums as their values, a float
    that is not finite as None."""
    if value is None or (isinstance(value, str | bool | int) and not isinstance(value, Enum)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        if not all(type(k) is str for k in value):
            raise _NotPlain
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return _plain(value.value)
    raise _NotPlain
