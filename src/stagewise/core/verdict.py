"""Verdicts: what a judge says about a candidate, always with its evidence."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class Outcome(StrEnum):
    RUNNING = "Running"
    """Not decided yet."""
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    NO_DATA = "NoData"


OPEN = frozenset({Outcome.RUNNING, Outcome.NO_DATA})
"""The outcomes of an analysis not decided yet. (A set of members: a member looked up on its Enum class costs
four times a global, and this is asked of every run of every delivery on every tick.)"""


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
                evidence={"metrics": [v.model_dump(mode="json") for v in verdicts]},
            )
    return Verdict(
        outcome=Outcome.SUCCESSFUL,
        message="; ".join(v.message for v in verdicts),
        evidence={"metrics": [v.model_dump(mode="json") for v in verdicts]},
    )
