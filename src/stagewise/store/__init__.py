"""Stores: where services, deliveries, events and measurements persist.

The controller commits a delivery's new state here *before* acting on it; a
store write is therefore the unit of crash safety, and `save_delivery` writes
the delivery, its events, the notifications of those events (the outbox)
and (optionally) its service in one transaction. `save_all` does the same for
every service a tick changed, together: one transaction per tick, however
many services moved. The controller keeps what it read in memory and asks
`change_mark` on every tick whether another process wrote since. Tokens (hashes only), the
audit log and pipelines are kept here too.
Each backend lives in its own module and imports `stagewise.core` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from stagewise.core.delivery import Delivery, Event
from stagewise.core.pipeline import PipelineRecord, PipelineRelease
from stagewise.core.service import ServiceRecord
from stagewise.errors import UnknownDriverError

Role = Literal["viewer", "operator", "admin"]


class StoredEvent(BaseModel):
    id: int
    delivery_id: int | None
    service: str
    at: float
    kind: str
    message: str


class Measurement(BaseModel):
    delivery_id: int
    at: float
    run: str
    """The analysis run's key (step-3, background)."""
    release: str
    metric: str
    value: float
    extra: dict[str, Any] = {}


class DeletedService(BaseModel):
    """A service forgotten by `delete`: its last record, and when."""

    record: ServiceRecord
    deleted_at: float


class OutboxItem(BaseModel):
    """One notification in the outbox: an event for one sink, and how sending it went."""

    id: int
    key: str
    """The idempotency key, `<event id>.<sink>`: the same on every try (the payload's `id`)."""
    service: str
    sink: str
    kind: str
    target: dict[str, Any]
    payload: dict[str, Any]
    attempts: int
    created_at: float
    next_at: float
    sent_at: float | None
    gave_up_at: float | None
    last_error: str


class SinkHealth(BaseModel):
    """How a sink of a service fares: what waits to be sent to it, and why it failed last."""

    sink: str
    kind: str
    pending: int
    """Notifications not sent yet."""
    given_up: int
    """Notifications it failed to take for so long that they were given up."""
    attempts: int
    """Tries of its most tried pending notification."""
    last_sent_at: float | None
    last_error: str


class TokenRecord(BaseModel):
    name: str
    role: Role
    hash: str
    """SHA-256 of the token, hex; the token itself is never stored."""
    created_at: float
    created_by: str


class AuditEntry(BaseModel):
    id: int = 0
    at: float
    actor: str
    """The name of the token that made the call ("-" when there was none, or it was wrong)."""
    role: str
    method: str
    path: str
    status: int
    detail: str = ""


@dataclass(frozen=True)
class Write:
    """What one tick changed of one service, committed with every other service's changes of that tick."""

    service: str
    delivery: Delivery | None = None
    """The delivery's new state (it exists already: `create_delivery` gave it its id)."""
    events: Sequence[Event] = ()
    """Appended to the log: the delivery's, with their notifications; or the service's when there is no delivery."""
    record: ServiceRecord | None = None
    """The service's new record (a delivery that succeeded made its candidate the stable release)."""
    measurements: Sequence[Measurement] = ()


class Store(Protocol):
    def get_service(self, name: str) -> ServiceRecord | None:
        """The service named `name`; None if there is none (or it was deleted)."""
        ...

    def list_services(self) -> list[ServiceRecord]: ...
    def put_service(self, record: ServiceRecord, events: list[Event] = ...) -> None: ...
    def delete_service(self, name: str, *, at: float, events: list[Event] = ...,
                       delivery: Delivery | None = None) -> None:
        """Forget a service, keeping its record as deleted, its deliveries and its events; also save its
        last `delivery` (ended by the deletion) and append `events`, in one transaction."""
        ...

    def deleted_services(self, name: str) -> list[DeletedService]:
        """Services once named `name` that were deleted, oldest first."""
        ...

    def create_delivery(
        self, delivery: Delivery, events: list[Event], service: ServiceRecord | None = None
    ) -> Delivery:
        """Insert a delivery (and update its service in the same transaction); returns it with its id."""
        ...

    def save_delivery(self, delivery: Delivery, events: list[Event], service: ServiceRecord | None = None) -> None:
        """Replace the delivery's state, append events, update the service: one transaction."""
        ...

    def save_all(self, writes: Sequence[Write]) -> None:
        """Every write in one transaction: each delivery replaced, its events appended with their
        notifications, its service updated, its measurements added; nothing of it if any part fails."""
        ...

    def change_mark(self) -> int:
        """A number that changes whenever another process commits to the store, never for this object's own
        writes; cheap enough to ask on every tick whether what the controller keeps in memory is still so."""
        ...

    def get_delivery(self, delivery_id: int) -> Delivery | None: ...
    def latest_delivery(self, service: str) -> Delivery | None: ...
    def active_deliveries(self) -> list[Delivery]:
        """Deliveries whose phase is not terminal, oldest first."""
        ...

    def deliveries(self, service: str, limit: int = 50) -> list[Delivery]:
        """A service's deliveries, newest first."""
        ...

    def events(self, service: str | None = None, *, delivery_id: int | None = None, after_id: int = 0,
               limit: int = 200) -> list[StoredEvent]:
        """Events in time order, after the event id `after_id` (for following a log)."""
        ...

    def add_measurements(self, rows: list[Measurement]) -> None: ...
    def measurements(self, delivery_id: int) -> list[Measurement]: ...

    # notifications: the outbox rows are written with the events they notify about
    def due_notifications(self, now: float, limit: int = 50) -> list[OutboxItem]: ...
    def notifications(self, service: str | None = None, *, after_id: int = 0, limit: int = 200
                      ) -> list[OutboxItem]: ...
    def notification_sent(self, item_id: int, *, at: float) -> None: ...
    def notification_failed(self, item_id: int, *, at: float, error: str, next_at: float, give_up: bool) -> None: ...
    def retry_notifications_now(self, now: float) -> int: ...
    def sink_health(self, service: str) -> list[SinkHealth]: ...

    # people
    def add_token(self, token: TokenRecord) -> None: ...
    def put_token(self, token: TokenRecord) -> None: ...
    def token_by_hash(self, digest: str) -> TokenRecord | None: ...
    def list_tokens(self) -> list[TokenRecord]: ...
    def delete_token(self, name: str) -> None: ...
    def record_audit(self, entry: AuditEntry) -> None: ...
    def audit(self, *, after_id: int = 0, limit: int = 200) -> list[AuditEntry]: ...

    # pipelines
    def put_pipeline(self, record: PipelineRecord) -> None: ...
    def get_pipeline(self, name: str) -> PipelineRecord | None: ...
    def list_pipelines(self) -> list[PipelineRecord]: ...
    def create_pipeline_release(self, release: PipelineRelease) -> PipelineRelease: ...
    def save_pipeline_release(self, release: PipelineRelease) -> None: ...
    def pipeline_releases(self, pipeline: str | None = None, *, active: bool = False,
                          limit: int = 50) -> list[PipelineRelease]: ...
    def close(self) -> None: ...


def open_store(kind: str, *, state_dir: Path) -> Store:
    if kind == "sqlite":
        from stagewise.store.sqlite import SqliteStore

        return SqliteStore(state_dir / "stagewise.db")
    raise UnknownDriverError("store", kind, ["sqlite"])
