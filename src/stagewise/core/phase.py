"""A delivery's phases and the events it records: the words every layer shares.

Apart from `core.delivery` so that the gates (`core.gates`), which the state
machine calls, can speak of phases and events without importing the machine.
Pure data.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from stagewise.core.gates_spec import NoticeEvent


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    WAITING = "Waiting"
    """Held by a gate: a confirm hook that has not said yes, an approval, or a deny window."""
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ABORTING = "Aborting"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED})
"""Phases of a delivery that ended. (Sets of members, here and below: a member looked up on its Enum class
costs four times a global, and these are asked about every delivery on every tick.)"""
ACTIVE = frozenset({Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED, Phase.WAITING, Phase.PROMOTING})
"""Phases of a delivery in flight that a person may still steer (promote, pause, abort)."""


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: float
    kind: str
    """phase, step, analysis, instance, user, hook, error."""
    message: str
    notice: NoticeEvent | None = None
    """The notification this event is (started, step, paused, waiting, analysis-failed, rolled-back,
    succeeded, failed): sinks that asked for it get it through the store's outbox."""
