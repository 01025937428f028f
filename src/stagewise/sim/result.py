"""What one simulated delivery measured: exposure, timings, capacity, downtime."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sample:
    """One tick of the timeline, for charts."""

    t: float
    candidate_share: float
    """Share of the tick's requests served by the candidate."""
    error_rate: float
    """Share of the tick's requests that failed (errors and requests finding no instance)."""


@dataclass
class RunResult:
    strategy: str
    candidate: str
    """The release delivered (its version)."""
    seed: int
    outcome: str = "Unfinished"
    """The delivery's last phase: Succeeded, RolledBack, Failed — or still going at the horizon."""
    serving: str = ""
    """The release serving users at the end."""
    decided_by: str | None = None
    """Who decided to roll back: analysis, instances, deadline, person, person (undo)."""
    reason: str = ""
    undone: bool = False
    """A person undid the release after it had been promoted."""
    steps: int = 0
    """Steps of the plan that delivers the release."""
    requests: int = 0
    failed_requests: int = 0
    """Requests answered with an error, or finding no ready instance."""
    candidate_requests: int = 0
    candidate_errors: int = 0
    candidate_users: int = 0
    """Distinct users (and testers) whose requests reached the candidate."""
    first_candidate_at: float | None = None
    decided_at: float | None = None
    gone_at: float | None = None
    """First moment after the decision when no request could reach the candidate."""
    recovered_at: float | None = None
    """First moment after the decision when the stable release served everything on a full fleet."""
    full_at: float | None = None
    """First moment the candidate took all traffic."""
    finished_at: float | None = None
    """When the delivery reached a final phase."""
    peak_extra: int = 0
    """Most instances alive at once above the fleet's size."""
    downtime: float = 0.0
    """Seconds with no ready instance in the route table."""
    ended_at: float = 0.0
    timeline: list[Sample] = field(default_factory=list)

    @property
    def detect_s(self) -> float | None:
        """From the first request on the candidate to the decision to roll back."""
        if self.decided_at is None or self.first_candidate_at is None:
            return None
        return max(0.0, self.decided_at - self.first_candidate_at)

    @property
    def rollback_s(self) -> float | None:
        """From the decision to roll back to no traffic on the candidate."""
        if self.decided_at is None or self.gone_at is None:
            return None
        return self.gone_at - self.decided_at

    @property
    def recovery_s(self) -> float | None:
        """From the decision to the stable release serving everything again."""
        if self.decided_at is None or self.recovered_at is None:
            return None
        return self.recovered_at - self.decided_at

    @property
    def rolled_back(self) -> bool:
        return self.decided_at is not None
