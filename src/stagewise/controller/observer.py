"""What the controller tells whoever watches it: each committed change of a delivery, each pass, each failure.

The server's metrics (`/metrics`) and its log of events listen here; the
controller itself neither counts nor formats anything for them. One call per
thing that happened, made after the store has committed it, so an observer
never reports a state that a crash could take back.

An observer must be quick and must not fail: it runs inside the reconcile
loop. It must never change the delivery it is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from stagewise.core.delivery import Delivery, Event
from stagewise.errors import StagewiseError


class Observer(Protocol):
    def delivery_changed(self, *, before: Delivery | None, after: Delivery, events: Sequence[Event],
                         now: float) -> None:
        """`after` was committed in place of `before` (None: a new delivery), with `events`."""

    def service_events(self, *, service: str, events: Sequence[Event]) -> None:
        """Events of a service outside any delivery (instances of the stable release, a deletion)."""

    def pass_finished(self, *, seconds: float) -> None:
        """One reconcile pass over every service took `seconds` (wall clock, whatever the controller's clock)."""

    def reconcile_failed(self, *, service: str, error: StagewiseError, internal: bool) -> None:
        """Reconciling `service` failed with `error` (on every failure, not only news); `internal`: a bug."""


class Unobserved:
    """The observer of a controller nobody watches."""

    def delivery_changed(self, *, before: Delivery | None, after: Delivery, events: Sequence[Event],
                         now: float) -> None:
        return None

    def service_events(self, *, service: str, events: Sequence[Event]) -> None:
        return None

    def pass_finished(self, *, seconds: float) -> None:
        return None

    def reconcile_failed(self, *, service: str, error: StagewiseError, internal: bool) -> None:
        return None


class Observers:
    """Several observers as one, called in order."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = list(observers)

    def delivery_changed(self, *, before: Delivery | None, after: Delivery, events: Sequence[Event],
                         now: float) -> None:
        for o in self.observers:
            o.delivery_changed(before=before, after=after, events=events, now=now)

    def service_events(self, *, service: str, events: Sequence[Event]) -> None:
        for o in self.observers:
            o.service_events(service=service, events=events)

    def pass_finished(self, *, seconds: float) -> None:
        for o in self.observers:
            o.pass_finished(seconds=seconds)

    def reconcile_failed(self, *, service: str, error: StagewiseError, internal: bool) -> None:
        for o in self.observers:
            o.reconcile_failed(service=service, error=error, internal=internal)
