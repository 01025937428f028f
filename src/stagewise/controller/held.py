"""The services the controller holds, kept in memory: read from the store once, then kept in step with it.

Reading every service and its delivery back from the store and decoding
them on every tick was most of what a tick cost. Every change to a service
goes through the controller that holds it — its ticks, and the verbs of the
API it serves — so the controller puts each state here right after the
store committed it. A write by another process (a command run against the
state directory) is noticed by the store's `change_mark` and read again in
full (`load`): rare, and the level-triggered loop then compares everything.

With several controllers on one store, each keeps every service here (a
fair share counts them all) but reconciles only those it holds a lease for;
`load_one` reads one again when its lease is taken or its epoch moved on (a
write by another server).

It must never hold a state the store did not commit — with one exception:
what a judge's look changes between two points of an analysis's history
(its judges' states, the counters they last saw, a Running verdict's
evidence, the moment of progress) is kept here only (`kept`), and reaches
the store with the delivery's next write, at the latest with the next point
a second later, two in a tick short of time (controller/work.py,
`judged_only`). Nothing is acted on because of it; a controller that dies
loses at most those seconds of looks,
and its successor folds the counters since the last write in one look — the
judges are anytime-valid however the counts are cut. Every other decision is
put here only after its transaction returned.
"""

from __future__ import annotations

from stagewise.core.delivery import Delivery
from stagewise.core.service import ServiceRecord
from stagewise.store import Store


class Held:
    """Each service's record and its delivery in flight (if any), as last committed."""

    def __init__(self) -> None:
        self.records: dict[str, ServiceRecord] = {}
        self.active: dict[str, Delivery] = {}
        """The delivery in flight of each service that has one (never a delivery that ended)."""
        self.ahead: dict[str, Delivery] = {}
        """For a delivery whose judges looked since its last write: that write (the store has it)."""

    def __contains__(self, name: str) -> bool:
        return name in self.records

    def names(self) -> list[str]:
        return sorted(self.records)

    def record(self, name: str) -> ServiceRecord | None:
        return self.records.get(name)

    def delivery(self, name: str) -> Delivery | None:
        """The service's delivery in flight; None when it has none."""
        return self.active.get(name)

    def saved(self, *, name: str, record: ServiceRecord | None = None, delivery: Delivery | None = None) -> None:
        """`record` and `delivery` of service `name` were committed (either may be None: unchanged)."""
        if record is not None:
            self.records[name] = record
        if delivery is not None:
            self.ahead.pop(name, None)
            if delivery.phase.terminal:
                self.active.pop(name, None)
            else:
                self.active[name] = delivery

    def kept(self, *, name: str, delivery: Delivery) -> None:
        """`delivery` differs from the service's committed one only by its judges' looks: held, not written."""
        committed = self.active.get(name)
        if committed is None:
            return
        self.ahead.setdefault(name, committed)
        self.active[name] = delivery

    def forget(self, name: str) -> None:
        """Drop what is kept of `name` (deleted, or held by another controller now)."""
        self.records.pop(name, None)
        self.active.pop(name, None)
        self.ahead.pop(name, None)

    def load_one(self, store: Store, name: str) -> None:
        """Read `name` from the store again."""
        record = store.get_service(name)
        if record is None:
            self.forget(name)
            return
        self.records[name] = record
        self.ahead.pop(name, None)  # read again because another server wrote: its state wins
        latest = store.latest_delivery(name)
        if latest is not None and not latest.phase.terminal:
            self.active[name] = latest
        else:
            self.active.pop(name, None)

    def load(self, store: Store) -> set[str]:
        """Read every service and delivery in flight from the store; the names of those that differ from before."""
        records = {r.name: r for r in store.list_services()}
        active: dict[str, Delivery] = {}
        for delivery in store.active_deliveries():  # oldest first: a service's latest wins
            if delivery.service in records:
                active[delivery.service] = delivery
        for name, committed in list(self.ahead.items()):
            if active.get(name) == committed:  # nobody else wrote it: the looks since stay
                active[name] = self.active[name]
            else:
                del self.ahead[name]
        changed = {name for name in records.keys() | self.records.keys()
                   if records.get(name) != self.records.get(name) or active.get(name) != self.active.get(name)}
        self.records, self.active = records, active
        return changed

    def unwritten(self) -> list[Delivery]:
        """The deliveries whose latest looks the store does not have yet."""
        return [self.active[name] for name in self.ahead if name in self.active]
