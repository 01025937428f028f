"""Stores: where services, deliveries, events and measurements persist.

The controller commits a delivery's new state here *before* acting on it; a
store write is therefore the unit of crash safety, and `save_delivery` writes
the delivery, its events, the notifications of those events (the outbox)
and (optionally) its service in one transaction. `save_all` does the same for
every service a tick changed, together: one transaction per tick, however
many services moved. The controller keeps what it read in memory and asks
`change_mark` on every tick whether another process wrote since. Tokens (hashes only), the
audit log and pipelines are kept here too.

With several controllers on one store, each service is held by one of them
under a lease (`leases`: service, holder, epoch, expires_at). A store given a
fence (`fence_with`) checks, inside every write of a service's state and as
its last statement, that the writer still holds that service at the epoch it
read it under and that the lease has not expired; otherwise the transaction
rolls back and `LeaseLostError` says who holds it now. A write by a server
that does not hold the service (a person's verb) moves the epoch on instead,
so the holder's decision in flight, made before the verb, cannot overwrite it.
Each backend lives in its own module and imports `stagewise.core` only:
SQLite (`sqlite.py`, the default: one file under the state directory) and
PostgreSQL (`postgresql.py`: one database that several servers can share);
the SQL both run is written once (`sql.py`, `sql_gates.py`), each backend
keeping what truly differs (transactions, migrations, the lease clock).
`open_store` picks one from a location string (`locations.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from stagewise.core.delivery import Delivery, Event
from stagewise.core.pipeline import PipelineRecord, PipelineRelease
from stagewise.core.service import ServiceRecord
from stagewise.store.locations import parse_location

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
    extra: dict[str, Any] = Field(default_factory=dict)
    """(A factory, not `{}`: pydantic deep-copies a mutable default for each of the rows a tick writes.)"""


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


class Lease(BaseModel):
    """Who holds a service, in which term, until when (the store's clock, seconds since the epoch)."""

    service: str
    holder: str
    """The controller's name; "" once given up."""
    epoch: int
    """Moves on each time the service changes hands (or another server writes a person's verb for it)."""
    expires_at: float


@dataclass(frozen=True)
class Fence:
    """What a write of a service's state must be checked against, inside its transaction."""

    holder: str
    epoch: int | None
    """The epoch the writer holds the service at; None: the writer does not hold it (a person's verb on another
    server), and the write moves the lease's epoch on."""


FenceFor = Callable[[str], Fence | None]
"""The fence of a write for a service; None: no check (a store no controller shares)."""


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
        notifications, its service updated, its measurements added, each checked against its service's fence;
        nothing of it if any part fails (a refused fence: `LeaseLostError` naming that service)."""
        ...

    def change_mark(self) -> int:
        """A number that changes whenever another process commits to the store (it may change more often:
        a store that cannot tell gives a new one every time); cheap enough to ask on every tick whether what
        the controller keeps in memory is still so."""
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
    # leases: several controllers on one store (controller/leases.py decides, the store only keeps them)
    def fence_with(self, fence: FenceFor | None) -> None:
        """Check every later write of a service's state against `fence(service)` (module docstring)."""
        ...

    def leases(self) -> tuple[float, list[Lease]]:
        """The store's clock now, and every lease."""
        ...

    def lease(self, service: str) -> Lease | None: ...
    def heartbeat(self, holder: str, *, duration: float) -> list[str]:
        """Note that controller `holder` lives for `duration` more seconds; the names of the live ones."""
        ...

    def acquire_leases(self, holder: str, services: list[str], *, duration: float) -> dict[str, int]:
        """Take those of `services` whose lease is free, given up or expired, each at a new epoch; those taken."""
        ...

    def renew_leases(self, holder: str, *, duration: float) -> dict[str, int]:
        """Extend every unexpired lease `holder` holds by `duration` from now; service -> epoch of those."""
        ...

    def release_leases(self, holder: str, services: list[str] | None = None) -> None:
        """Give up `holder`'s leases of `services` (all, and its heartbeat, when None): free at once."""
        ...

    def wait_for_changes(self, timeout: float) -> set[str] | None:
        """Services another process wrote, waiting up to `timeout` seconds for one; None when this store cannot
        tell (then nothing else writes to it)."""
        ...

    def close(self) -> None: ...


def open_store(location: str = "sqlite", *, state_dir: Path) -> Store:
    """The store at `location` (store/locations.py): `sqlite` under `state_dir` (the default), `sqlite:PATH`,
    or a PostgreSQL connection string such as `postgresql://USER@HOST/DB`; created or migrated as needed."""
    where = parse_location(location, state_dir=state_dir)
    if where.kind == "postgresql":
        from stagewise.store.postgresql import PostgresStore  # psycopg is loaded only by those who use it

        return PostgresStore(where)
    from stagewise.store.sqlite import SqliteStore

    return SqliteStore(Path(where.target))
