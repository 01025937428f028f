"""The rows of the dashboard's overview: one per service, filtered by phase and name.

Built for hundreds of services: one row costs one store read (the latest
delivery) and, only for a delivery in flight, a second one (the last finished
delivery) and compiling its plan to know the step and the candidate's share. Nothing else is looked at, so
the page stays fast however long each service's history grows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from stagewise.api.views import delivery_view
from stagewise.controller import Controller
from stagewise.core.delivery import Delivery, Phase

PHASE_ORDER = [p.value for p in Phase]
ACTIVE = "active"
"""The filter for every delivery in flight, whatever its phase."""
IDLE = "none"
"""The filter for services that never had a delivery."""


@dataclass(frozen=True)
class Row:
    service: str
    stable: str | None
    strategy: str
    """The service's configured strategy, or the one of the delivery in flight."""
    phase: str | None
    """The latest delivery's phase (none: the service never had one)."""
    delivery: int | None = None
    """The id of the delivery in flight."""
    candidate: str | None = None
    step: int = 0
    steps: int = 0
    step_title: str = ""
    share: int | None = None
    """The candidate's share of requests now, in percent."""
    paused: bool = False
    last_phase: str | None = None
    """The outcome of the last finished delivery."""
    last_to: str | None = None
    last_message: str = ""
    last_finished_at: float | None = None

    @property
    def active(self) -> bool:
        return self.delivery is not None


def overview_rows(controller: Controller) -> list[Row]:
    """Every service, by name."""
    rows = []
    for record in controller.store.list_services():
        recent = controller.store.deliveries(record.name, limit=1)
        in_flight = recent[0] if recent and not recent[0].phase.terminal else None
        if in_flight is not None:  # the last finished delivery is the one before it
            recent = controller.store.deliveries(record.name, limit=2)
        row = Row(
            service=record.name,
            stable=record.stable.version if record.stable else None,
            strategy=in_flight.strategy if in_flight else record.spec.spec.strategy.name,
            phase=recent[0].phase.value if recent else None,
        )
        finished = next((d for d in recent if d.phase.terminal), None)
        if finished is not None:
            row = replace(row, last_phase=finished.phase.value, last_to=finished.candidate.version,
                          last_message=finished.message, last_finished_at=finished.finished_at)
        if in_flight is not None:
            row = _with_delivery(controller, row, in_flight)
        rows.append(row)
    return rows


def _with_delivery(controller: Controller, row: Row, d: Delivery) -> Row:
    view = delivery_view(controller, d)
    return replace(row, delivery=d.id, candidate=d.candidate.version, step=view["step"], steps=view["steps"],
                   step_title=view["step_title"], paused=d.paused,
                   share=view["weights"].get(d.candidate.version, 0))


def filter_rows(rows: list[Row], *, phase: str = "", query: str = "") -> list[Row]:
    """Rows whose latest delivery is in `phase` (or `active`, or `none`) and whose name contains `query`."""
    query = query.strip().lower()
    out = []
    for row in rows:
        if query and query not in row.service.lower():
            continue
        if phase == ACTIVE and not row.active:
            continue
        if phase == IDLE and row.phase is not None:
            continue
        if phase not in ("", ACTIVE, IDLE) and row.phase != phase:
            continue
        out.append(row)
    # Deliveries in flight first: they are what a person watching a release looks for.
    return sorted(out, key=lambda r: (not r.active, r.service))


def phase_counts(rows: list[Row]) -> dict[str, int]:
    """How many services' latest delivery is in each phase, plus `active`, `none` and the total."""
    counts = Counter(row.phase or IDLE for row in rows)
    out = {"": len(rows), ACTIVE: sum(1 for r in rows if r.active)}
    out.update({p: counts[p] for p in PHASE_ORDER if counts[p]})
    if counts[IDLE]:
        out[IDLE] = counts[IDLE]
    return out
