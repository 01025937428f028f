"""Which sinks an event goes to, and what they receive: the rows of the store's outbox.

An event that is a notice (started, step, paused, waiting, analysis-failed,
rolled-back, succeeded, failed: `Event.notice`) goes to every notification
of the delivery's spec whose `events` name it; every event of a delivery
goes to its `event` hooks. Each (event, sink) pair is one outbox row, written
by the store in the same transaction as the event itself — so an event that
was committed is never lost to its sinks, whatever crashes after — and sent
by the controller's sender at least once, under an idempotency key that is
the same on every try: `<event id>.<sink>`.

The row keeps a copy of the sink as the spec said it then (URL, secret,
argv), so a notification goes where it was meant to even if the spec
changes, or the service is deleted, before it is sent.

Pure: no I/O; the store calls `outbox_rows` inside its write transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from stagewise.core.phase import Event
from stagewise.core.spec import ServiceSpec

if TYPE_CHECKING:
    from stagewise.core.delivery import Delivery

HOOK_SINK_PREFIX = "hook/"
"""An `event` hook's sink name is `hook/<hook name>`, beside the notifications' own names."""


class OutboxRow(BaseModel):
    """One notification to send: to which sink, how, and what (the store adds the idempotency key `id`)."""

    model_config = ConfigDict(frozen=True)

    sink: str
    kind: str
    """webhook, slack, command, or hook (an `event` hook: its http call or its command)."""
    target: dict[str, Any]
    """The sink's settings as the spec said them when the event happened."""
    payload: dict[str, Any]


def idempotency_key(event_id: int, sink: str) -> str:
    return f"{event_id}.{sink}"


def outbox_rows(event: Event, spec: ServiceSpec, delivery: Delivery | None) -> list[OutboxRow]:
    """The outbox rows for `event` of a service with `spec` (and of `delivery`, when it is one's)."""
    body = spec.spec
    if not body.notifications and not body.hooks:
        return []
    payload = notice_payload(event, spec.name, delivery)
    rows = []
    if event.notice is not None:
        for sink in body.notifications:
            if event.notice in sink.events:
                settings = getattr(sink, sink.kind)
                rows.append(OutboxRow(sink=sink.name, kind=sink.kind, payload=payload,
                                      target=settings.model_dump(mode="json", by_alias=True)))
    if delivery is not None:
        for hook in body.hooks:
            if hook.type == "event":
                rows.append(OutboxRow(sink=HOOK_SINK_PREFIX + hook.name, kind="hook", payload=payload,
                                      target=hook.model_dump(mode="json", by_alias=True)))
    return rows


def notice_payload(event: Event, service: str, delivery: Delivery | None) -> dict[str, Any]:
    """The JSON a sink receives, without its `id` (the README documents every field)."""
    out: dict[str, Any] = {
        "event": event.notice or event.kind, "kind": event.kind, "service": service,
        "message": event.message, "at": event.at,
        "release": None, "stable": None, "phase": None, "strategy": None, "step": None, "delivery": None,
    }
    if delivery is not None:
        out.update({
            "release": delivery.candidate.version, "stable": delivery.stable.version if delivery.stable else None,
            "phase": delivery.phase.value, "strategy": delivery.strategy, "step": delivery.step + 1,
            "delivery": delivery.id, "attempt": delivery.attempt,
        })
    return out
