"""Stores: where services, deliveries, events and measurements persist.

The controller commits a delivery's new state here *before* acting on it; a
store write is therefore the unit of crash safety, and `save_delivery` writes
the delivery, its events and (optionally) its service in one transaction.
Each backend lives in its own module and imports `stagewise.core` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from stagewise.core.delivery import Delivery, Event
from stagewise.core.service import ServiceRecord
from stagewise.errors import UnknownDriverError


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
    def close(self) -> None: ...


def open_store(kind: str, *, state_dir: Path) -> Store:
    if kind == "sqlite":
        from stagewise.store.sqlite import SqliteStore

        return SqliteStore(state_dir / "stagewise.db")
    raise UnknownDriverError("store", kind, ["sqlite"])
