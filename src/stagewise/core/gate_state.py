"""What a delivery remembers of its gates: hook answers, approvals, and what it waits for now.

These records live in the delivery's committed state (`Delivery.hooks`,
`.approvals`, `.waiting`), so a controller restarted at any moment knows
which hooks already said yes, who approved, and why the delivery waits.
They are data only; `core.gates` decides with them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from stagewise.core.gates_spec import HookSpec


class HookAnswer(BaseModel):
    """One call of a hook, as the controller saw it end."""

    model_config = ConfigDict(frozen=True)

    key: str
    """The call's id: `<delivery>.<attempt>/<point>/<hook>/<call number>` (also the body's `id`)."""
    point: str
    """Where in the delivery: confirm-rollout, confirm-traffic-increase@2, pre-rollout, rollout@3, rollback, ..."""
    hook: str
    ok: bool
    """Yes: a 2xx answer, or exit status 0."""
    status: str
    """"HTTP 503", "exit 1", "timed out after 5s", "connection refused"."""
    message: str = ""
    """The start of the answer's body or output, for the event log."""
    duration: float
    """Seconds the call took."""
    at: float
    """When it ended."""


class HookState(BaseModel):
    """One hook at one point of the delivery: how often it was called, and its last answer."""

    point: str
    hook: str
    calls: int = 0
    failures: int = 0
    passed: bool = False
    """It answered yes (confirm and check hooks); it is not called again at this point."""
    failed: bool = False
    """A check hook failed `failureLimit` times: the delivery rolls back."""
    next_at: float = 0.0
    """Not called again before this time."""
    last: HookAnswer | None = None


class Approval(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: float
    by: str
    """The name of the API token that approved."""
    gate: str
    """The gate approved: `approval@<step>` or `<point>/<hook>`."""
    comment: str = ""


class Hold(BaseModel):
    """One reason a delivery waits."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["hook", "approval", "window"]
    point: str
    """confirm-rollout, confirm-traffic-increase@3, confirm-promotion, approval@2, window."""
    name: str
    """The hook's name, `approval`, or the window in words."""
    message: str
    """In words, with the hook's last answer or until when a window holds."""
    until: float | None = None
    """A window: when it lets the delivery go on."""


class Waiting(BaseModel):
    """What the delivery waits for now (phase Waiting)."""

    enter: int | None
    """The step it enters once nothing holds it; none: the current step's own approval."""
    since: float
    holds: list[Hold]

    def words(self) -> str:
        return "; ".join(h.message for h in self.holds)


class HookCall(BaseModel):
    """A hook call the controller should make now."""

    model_config = ConfigDict(frozen=True)

    key: str
    point: str
    hook: HookSpec
    body: dict[str, Any]
    """The JSON the hook receives (documented in the README): id, hook, type, point, service, release,
    stable, strategy, step, steps, phase, attempt, delivery."""
