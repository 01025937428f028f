"""Bookkeeping shared by the judges that check once per `interval`: threshold and mannwhitney.

The controller calls every judge on every tick (about 4 times a second), but
Flagger's and Kayenta's judges decide on a schedule: one check per interval.
`CheckState` is that schedule while a judge works — when the next check is
due, how many checks had data, how many failed, the last few — kept between
looks in the judge's state (`core.judge_state.Checks`), so a controller
restart resumes it where it was. `conclude` turns the counts into
the outcome every judge shares: Failed after `failureLimit` failed checks;
at the deadline Successful when some check had data, else the `noData` policy,
with a sentence that names what was missing.

Pure: time is the `elapsed` argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stagewise.analysis.judges.sequential import fmt_seconds
from stagewise.core.judge_state import Checks
from stagewise.core.spec import AnalysisTemplate
from stagewise.core.verdict import Outcome, Verdict

DEFAULT_INTERVAL = 60.0
"""Seconds between checks when the template gives no interval (Flagger's and Kayenta's usual minute)."""
KEPT_CHECKS = 20
"""Checks kept in the state and the evidence, newest last."""


@dataclass
class CheckState:
    started: bool = False
    count: int = 0
    """Checks that had data."""
    failed: int = 0
    empty: int = 0
    """Checks without data (too few requests, no value)."""
    next_at: float = 0.0
    last_at: float = -1.0
    """When the last check ran (-1: never)."""
    recent: list[dict[str, Any]] = field(default_factory=list)
    verdict: Verdict | None = None

    @classmethod
    def load(cls, state: Checks | None) -> CheckState:
        """The schedule kept in `state`, or a fresh one when there is none (or it belongs to another judge)."""
        if state is None:
            return cls()
        return cls(started=True, count=state.count, failed=state.failed, empty=state.empty, next_at=state.next_at,
                   last_at=state.last_at, recent=list(state.recent), verdict=state.verdict)

    def kept(self) -> dict[str, Any]:
        """The schedule's fields of a judge's state (`Checks`)."""
        return {"count": self.count, "failed": self.failed, "empty": self.empty, "next_at": self.next_at,
                "last_at": self.last_at, "recent": tuple(self.recent)}

    def record(self, at: float, *, failed: bool | None, value: float | None) -> None:
        """One check: `failed` None means it had no data."""
        self.last_at = at
        if failed is None:
            self.empty += 1
        else:
            self.count += 1
            self.failed += failed
        entry: dict[str, Any] = {"t": at, "failed": failed}
        if value is not None:
            entry["value"] = value if value == value and abs(value) != float("inf") else None
        self.recent = [*self.recent, entry][-KEPT_CHECKS:]

    @property
    def last(self) -> dict[str, Any] | None:
        return self.recent[-1] if self.recent else None

    def summary(self) -> dict[str, Any]:
        return {"checks": self.count, "failed_checks": self.failed, "empty_checks": self.empty,
                "next_check_at": self.next_at, "recent_checks": self.recent}


def interval_of(template: AnalysisTemplate) -> float:
    return template.interval if template.interval and template.interval > 0 else DEFAULT_INTERVAL


def check_due(checks: CheckState, template: AnalysisTemplate, elapsed: float, duration: float | None) -> bool:
    """Whether a check is due now; moves the schedule on when it is.

    Checks fall on a fixed grid (interval, 2·interval, ...) from the start of
    the run, plus one at the deadline, so a late tick does not shift the rest.
    """
    step = interval_of(template)
    if not checks.started:
        checks.started = True
        checks.next_at = step
    at_deadline = duration is not None and elapsed >= duration > checks.last_at
    if elapsed < checks.next_at and not at_deadline:
        return False
    while checks.next_at <= elapsed:
        checks.next_at += step
    return True


def conclude(
    template: AnalysisTemplate,
    checks: CheckState,
    *,
    requests: tuple[int, int] | None,
    elapsed: float,
    duration: float | None,
    fail_at_once: bool = False,
    fail_without_data: bool = False,
) -> tuple[Outcome, str]:
    """The outcome, and the sentence about missing data ('' when none is missing).

    `requests` None: the judge reads a provider's values, not request counts.
    """
    if checks.failed >= template.failure_limit or (fail_at_once and checks.failed > 0):
        return Outcome.FAILED, ""
    if duration is None or elapsed < duration:
        return Outcome.RUNNING, ""
    if checks.count > 0:
        return Outcome.SUCCESSFUL, ""
    if requests is None:
        lack = f"no value measured after {fmt_seconds(elapsed)} ({checks.empty} checks without data)"
    else:
        need = template.min_requests
        parts = [f"{arm} {n:,} of {need:,}" for arm, n in zip(("baseline", "candidate"), requests, strict=True)
                 if n < need] or [f"candidate {requests[1]:,} of {need:,}"]
        parts[0] += " requests needed"
        lack = f"too little traffic to judge after {fmt_seconds(elapsed)}: {', '.join(parts)}"
    if fail_without_data:
        return Outcome.FAILED, f"{lack}; failing (a critical metric must have data)"
    if template.no_data == "fail":
        return Outcome.FAILED, f"{lack}; failing (noData: fail)"
    if template.no_data == "pass":
        return Outcome.SUCCESSFUL, f"{lack}; passing without evidence (noData: pass)"
    return Outcome.NO_DATA, f"{lack}; waiting for more (noData: wait)"
