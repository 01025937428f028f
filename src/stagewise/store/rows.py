"""Rows as both backends read them, made into the store's models: one place for what a column means.

SQLite and PostgreSQL keep the same tables (their schemas move in step), and
select the same columns in the same order, so turning a row into an
`OutboxItem` or a `TokenRecord` is written once, here. Pure: no database.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import TypeAdapter

from stagewise.core.delivery import AnalysisRun, Delivery
from stagewise.core.spec import ServiceSpec
from stagewise.errors import LeaseLostError
from stagewise.store import AuditEntry, Fence, Lease, OutboxItem, SinkHealth, StoredEvent, TokenRecord

OUTBOX_COLUMNS = ("id, key, service, sink, kind, target, payload, attempts, created_at, next_at, sent_at,"
                  " gave_up_at, last_error")
TOKEN_COLUMNS = "name, role, hash, created_at, created_by"
AUDIT_COLUMNS = "id, at, actor, role, method, path, status, detail"
EVENT_COLUMNS = "id, delivery_id, service, at, kind, message"
LEASE_COLUMNS = "service, holder, epoch, expires_at"


def outbox_item(row: Sequence[Any]) -> OutboxItem:
    (id_, key, service, sink, kind, target, payload, attempts, created_at, next_at, sent_at, gave_up_at,
     last_error) = row
    return OutboxItem(id=id_, key=key, service=service, sink=sink, kind=kind, target=json.loads(str(target)),
                      payload=json.loads(str(payload)), attempts=attempts, created_at=created_at, next_at=next_at,
                      sent_at=sent_at, gave_up_at=gave_up_at, last_error=last_error)


def token(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(name=row[0], role=row[1], hash=row[2], created_at=row[3], created_by=row[4])


def audit_entry(row: Sequence[Any]) -> AuditEntry:
    return AuditEntry(id=row[0], at=row[1], actor=row[2], role=row[3], method=row[4], path=row[5], status=row[6],
                      detail=row[7])


def stored_event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(id=row[0], delivery_id=row[1], service=row[2], at=row[3], kind=row[4], message=row[5])


def sink_health_of(rows: Sequence[Sequence[Any]], errors: dict[str, str]) -> list[SinkHealth]:
    """Per sink: (sink, kind, pending, given up, last sent at, attempts of the most tried pending); `errors`: each
    sink's last error."""
    return [SinkHealth(sink=r[0], kind=r[1], pending=int(r[2] or 0), given_up=int(r[3] or 0), last_sent_at=r[4],
                       attempts=int(r[5] or 0), last_error=str(errors.get(r[0], ""))) for r in rows]


def lease_row(row: Sequence[Any]) -> Lease:
    return Lease(service=row[0], holder=row[1], epoch=int(row[2]), expires_at=float(row[3]))


def lease_lost(service: str, fence: Fence, row: tuple[str, int, float] | None, now: float) -> LeaseLostError:
    """The refusal of `fence.holder`'s write of `service`, saying who holds it now."""
    holder, epoch, expires_at = row if row is not None else ("", 0, 0.0)
    if holder == fence.holder and expires_at <= now:
        why = f"its lease (epoch {epoch}) expired {now - expires_at:.1f}s ago"
    elif holder == fence.holder:
        why = f"the epoch moved on to {epoch} (another server wrote to it)"
    elif holder:
        why = f"{holder} holds it at epoch {epoch}"
    else:
        why = "nobody holds it"
    return LeaseLostError(f"{service}: write refused, the lease of epoch {fence.epoch} is lost: {why}",
                          service=service, holder=holder, epoch=int(epoch))


TEXTS_MAX = 16_384
"""Specs and lists of past analyses whose JSON `delivery_json` keeps (one each per delivery in flight); past this
many of either it starts that one afresh."""
_spec_texts: dict[int, tuple[ServiceSpec, str]] = {}
_past_texts: dict[int, tuple[list[AnalysisRun], str]] = {}
_KEPT = {"spec", "past_analysis"}
_PAST = TypeAdapter(list[AnalysisRun])
T = TypeVar("T")


def delivery_json(delivery: Delivery) -> str:
    """The JSON of `delivery.model_dump_json()` (its fields in another order), with the JSON of its spec and of its
    past analyses made once each.

    Neither changes while the delivery is in flight — a run that ends makes a new list of past ones, never
    changes the list — and they are most of what its JSON costs to make (the spec's durations and tags through
    their own serializers, each past run's verdict in words): a delivery written on every step of its plan would
    make them again each time. They go last, the rest in the order the dump gives.
    """
    rest = delivery.model_dump_json(exclude=_KEPT)
    past = delivery.past_analysis
    return (f'{rest[:-1]},"spec":{_kept(_spec_texts, delivery.spec, ServiceSpec.model_dump_json)},'
            f'"past_analysis":{_kept(_past_texts, past, _past_json) if past else "[]"}}}')


def _past_json(runs: list[AnalysisRun]) -> str:
    return _PAST.dump_json(runs).decode()


def _kept(texts: dict[int, tuple[T, str]], value: T, dump: Callable[[T], str]) -> str:
    """The JSON of `value` from `texts` (by identity), made by `dump` and kept there if it is not in it yet."""
    kept = texts.get(id(value))
    if kept is None or kept[0] is not value:
        if len(texts) >= TEXTS_MAX:
            texts.clear()
        kept = texts[id(value)] = (value, dump(value))
    return kept[1]
