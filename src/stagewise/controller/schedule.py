"""When each service is reconciled next: a priority queue by due time, so a tick touches only what is due.

A sweep over every service on every tick costs as much for a thousand
services that have nothing to do as for a thousand deliveries in flight.
Instead each service has one due time, and a tick takes the services due by
its `now` (controller-runtime's work queue, informers' periodic resync):

- a delivery in flight, or a world still converging, is due on the next tick —
  except one that only waits out a timed pause (`quiet_until`): it is due
  when its pause ends, and looked at once per `look` meanwhile (its
  instances' health), as Argo Rollouts requeues a paused Rollout for the
  pause's remaining time;
- a failing service is due when its retry is (controller/retries.py);
- an idle service — nothing in flight, its world as desired — is resynced
  once per `period`, each at its own phase within the period (a fixed hash of
  its name), so that ten thousand idle services spread evenly over the ticks
  instead of all coming due together, and none waits longer than one period;
- an event that concerns a service (a person's verb, a driver's news, a
  write by another process) makes it due at once.

A service being reconciled has no due time until its reconcile ends and
sets the next one. Holds no clock and does no I/O: times are arguments.
"""

from __future__ import annotations

import heapq
import itertools
import math
import zlib
from collections.abc import Iterable

from stagewise.core.delivery import Delivery, Phase, started
from stagewise.core.plan import Plan
from stagewise.core.verdict import OPEN, Outcome

COMPACT_AT = 4
"""Rebuild the heap once stale entries outnumber live ones this many times."""


class Schedule:
    """Each service's next due time; the services due by a time, earliest first."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()

    def __contains__(self, service: str) -> bool:
        return service in self._due

    def __len__(self) -> int:
        return len(self._due)

    def due_at(self, service: str) -> float | None:
        return self._due.get(service)

    def at(self, service: str, when: float) -> None:
        """`service` is due at `when`, whatever it was due at before."""
        if self._due.get(service) == when:
            return
        self._due[service] = when
        heapq.heappush(self._heap, (when, next(self._order), service))
        if len(self._heap) > COMPACT_AT * len(self._due) + 64:
            self._compact()

    def soon(self, service: str, when: float) -> None:
        """`service` is due at `when`, or earlier if it already was."""
        due = self._due.get(service)
        if due is None or when < due:
            self.at(service, when)

    def drop(self, service: str) -> None:
        """`service` is not due at all (deleted, or being reconciled)."""
        self._due.pop(service, None)

    def pop_due(self, now: float) -> list[str]:
        """The services due by `now`, earliest first; each is then due no more until `at` is called again."""
        out: list[str] = []
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= now:
            when, _, service = heapq.heappop(heap)
            if due.get(service) == when:  # otherwise a stale entry: the service was rescheduled since
                del due[service]
                out.append(service)
        return out

    def next_due(self) -> float | None:
        """The earliest due time of any service."""
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _compact(self) -> None:
        self._heap = [(when, next(self._order), service) for service, when in self._due.items()]
        heapq.heapify(self._heap)


PUT_OFF_MAX = 3
"""Ticks in a row a look is put off while the ticks have time for it (`OVERDUE`): with a thousand analyses in
flight on one controller, their looks then take a quarter of them per tick, and the judges see the counts three
quarters of a second later at most."""
PUT_OFF_LONGEST = 6
"""Ticks in a row a look may be put off at most: it is taken on the next one, whatever the budget. Only a burst
of steps that takes the whole budget for ticks (a hundred deliveries applied at once) makes a look wait past
`PUT_OFF_MAX`: the judges then see the counts a second and a half later at most."""
DECIDING = 0.75
"""The share of the budget after which a tick takes no more looks that can wait (`Budget.deciding`), with what
committing and acting on what it took will cost counted in; the rest is a margin for that estimate."""
OVERDUE = 0.9
"""The share of the budget up to which a tick takes a look put off `PUT_OFF_MAX` ticks in a row already."""
TAIL_WEIGHT = 0.2
"""The weight of the last tick in `Budget.per_write` and `Budget.per_service`."""


class Budget:
    """Which of the looks that can wait a tick takes, so that it keeps to its time when it can.

    A tick takes first what cannot wait — a step's timer, a verb, a world to
    converge, a look put off `PUT_OFF_LONGEST` ticks in a row — and then the
    looks that can (`can_wait`: of an analysis's judges, or at instances a step
    waits to see ready), those put off longest first, one after another (each
    observed, then decided) while the tick's CPU — spent so far, and what
    committing and acting on the services it took will take (`per_write`,
    `per_service`) — stays under `DECIDING` of `seconds`; under `OVERDUE` for a
    look put off `PUT_OFF_MAX` ticks in a row already. Time spent waiting on
    drivers is not counted: putting a look off would not save it. The others
    wait for the next tick, unobserved (`put_off`). So a tick that the looks of a thousand
    analyses would stretch past its period keeps to it: a look waits
    `PUT_OFF_MAX` ticks while the ticks have time for it, `PUT_OFF_LONGEST` at
    most when a burst of steps takes it all, and a step is still decided on the
    tick it is due.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.waiting: set[str] = set()
        """Services the last tick put off."""
        self.taken = 0
        """Services this tick decided so far."""
        self.writing = 0
        """Of those, services with something to write."""
        self.per_service = 0.0
        """CPU seconds acting on a service decided took, on the last ticks (a moving average)."""
        self.per_write = 0.0
        """CPU seconds committing a service's write took, on the last ticks (a moving average)."""
        self._in_a_row: dict[str, int] = {}
        """Ticks in a row each service was put off, up to the last one."""

    def next_tick(self) -> None:
        """A tick begins: those the last one put off have waited one more tick in a row; the others none."""
        self._in_a_row = {name: self._in_a_row.get(name, 0) + 1 for name in self.waiting}
        self.waiting = set()
        self.taken = self.writing = 0

    def waited(self, name: str) -> int:
        """Ticks in a row `name` was put off, up to the last one."""
        return self._in_a_row.get(name, 0)

    def may_wait(self, name: str) -> bool:
        """Whether `name` may be put off on this tick (if it can wait): not `PUT_OFF_LONGEST` ticks in a row yet."""
        return self._in_a_row.get(name, 0) < PUT_OFF_LONGEST

    def put_off(self, names: Iterable[str]) -> None:
        """This tick leaves `names` to the next one."""
        self.waiting.update(names)

    def deciding(self, spent: float, name: str | None = None) -> bool:
        """Whether a tick that has spent `spent` CPU seconds so far still takes a look that can wait (`name`'s:
        more time for one put off `PUT_OFF_MAX` ticks in a row already), counting what committing and acting on
        the services it took will take."""
        share = OVERDUE if name is not None and self.waited(name) >= PUT_OFF_MAX else DECIDING
        return spent + self.taken * self.per_service + self.writing * self.per_write < share * self.seconds

    def took(self, *, writes: bool) -> None:
        """The tick decided one more service; with something to write, or not."""
        self.taken += 1
        self.writing += writes

    def ended(self, *, committing: float, acting: float) -> None:
        """Committing the writes of the services the tick decided took `committing` CPU seconds, and acting on
        them `acting`."""
        if self.writing:
            self.per_write += TAIL_WEIGHT * (committing / self.writing - self.per_write)
        if self.taken:
            self.per_service += TAIL_WEIGHT * (acting / self.taken - self.per_service)


def next_beat(due: float, now: float, period: float) -> float:
    """When the tick after the one due at `due` is due, the last having ended at `now`: one `period` later, on
    the beat — a sleep that wakes late does not delay the ticks after it — or at once, when the last ran past
    its period (the beat starts again from there)."""
    return max(due + period, now)


def phase_of(service: str) -> float:
    """The service's fixed place within a resync period, in [0, 1): spreads services evenly, same on every run."""
    return zlib.crc32(service.encode()) / 2**32


def next_resync(service: str, now: float, period: float) -> float:
    """The first time after `now` at the service's phase within `period`: at most one period away."""
    offset = phase_of(service) * period
    return (math.floor((now - offset) / period) + 1) * period + offset


_RUNNING = Outcome.RUNNING
_MOVING = frozenset({Phase.PROGRESSING, Phase.PROMOTING})
"""(Members as globals: looked up on their Enum class, for every delivery due on every tick, they cost 4×.)"""


def _left_alone(delivery: Delivery) -> bool:
    """Moving forward with nothing but its own gates to pass: no person's pause or promote, nothing holding it
    (a hook, an approval, a window), no hooks (their calls and answers come on any tick)."""
    return (delivery.phase in _MOVING and not delivery.paused
            and not delivery.release_gate and delivery.waiting is None and started(delivery)
            and not delivery.spec.spec.hooks)


def _unattended(delivery: Delivery) -> bool:
    """Left alone (`_left_alone`), and ready in its step."""
    return delivery.ready_at is not None and _left_alone(delivery)


def _started_its_analyses(delivery: Delivery, plan: Plan) -> bool:
    """Whether the analyses of the delivery's step (its own, and a background one due by now) have started:
    each starts on a tick."""
    step = delivery.current(plan)
    assert step is not None  # a delivery in progress is in one of its steps
    background = plan.background
    if background is not None and delivery.step >= background.starting_step and "background" not in delivery.analysis:
        return False
    return step.analysis is None or f"step-{delivery.step}" in delivery.analysis


def quiet_until(delivery: Delivery, plan: Plan, now: float) -> float | None:
    """When the delivery's timed pause ends, if until then every tick would leave it as it is; else None.

    That holds for a delivery moving forward, in a step whose only gate left is
    its timed pause: ready, no analysis open (the step's, or a background one
    that will start or runs), no hooks, no approval, nothing holding it, no
    person's pause. Its progress deadline does not run meanwhile
    (`core.delivery.progress_since`). What can still move it is news: a
    person's verb wakes it; an instance that fails is seen when it is next
    looked at.
    """
    if not _unattended(delivery) or any(run.verdict.outcome in OPEN for run in delivery.analysis.values()):
        return None
    step = delivery.current(plan)
    if step is None or not step.pause or step.manual or step.approval is not None:
        return None
    if not _started_its_analyses(delivery, plan):
        return None
    assert delivery.ready_at is not None  # unattended
    end = delivery.ready_at + step.pause
    return end if now < end else None


def can_wait(delivery: Delivery, plan: Plan, horizon: float) -> bool:
    """Whether all the delivery may do until `horizon` is another look: of its judges (`only_looks`), or at its
    instances, that its step waits to see ready (`only_waits_ready`). A tick short of time may put such a look
    off to the next tick (`Budget`: `PUT_OFF_LONGEST` ticks in a row at most)."""
    return only_looks(delivery, plan, horizon) or only_waits_ready(delivery, plan, horizon)


def only_waits_ready(delivery: Delivery, plan: Plan, horizon: float) -> bool:
    """Whether until `horizon` all the delivery may do is see the instances of its step ready.

    It moves forward, left alone (`_left_alone`), in a step that waits for its instances and for no person,
    not ready yet, with no analysis open, and its progress deadline does not pass by `horizon`. A look put
    off to the next tick sees them ready a tick later: the step goes on (or its timed pause begins) that
    much later, and nothing else changes — an instance that fails, or a host out of reach, is seen on
    that look too. A rollback (phase Aborting) is never put off.
    """
    if delivery.ready_at is not None or not _left_alone(delivery):
        return False
    if any(run.verdict.outcome in OPEN for run in delivery.analysis.values()):
        return False
    step = delivery.current(plan)
    if step is None or not step.wait_ready or step.manual or step.approval is not None:
        return False
    return horizon - delivery.progress_at <= delivery.spec.spec.progress_deadline


def only_looks(delivery: Delivery, plan: Plan, horizon: float) -> bool:
    """Whether until `horizon` all the delivery may do is another look of its analyses' judges.

    Its analyses run (none waits for data: NoData has a deadline), none ends
    by `horizon`, its step's timed pause does not either, and nothing else can
    move it (`_unattended`). A look put off to the next tick changes only when
    the judges see the counts — they are anytime-valid, however the counts are
    cut — so a tick short of time may put it off (`Budget`: `PUT_OFF_LONGEST`
    ticks in a row at most).
    """
    if not _unattended(delivery):
        return False
    running = [run for run in delivery.analysis.values() if run.verdict.outcome in OPEN]
    if not running or any(run.verdict.outcome is not _RUNNING for run in running):
        return False
    if any(run.duration is not None and run.started_at + run.duration <= horizon for run in running):
        return False
    step = delivery.current(plan)
    if step is None or step.manual or step.approval is not None:
        return False
    assert delivery.ready_at is not None  # unattended
    if step.pause and delivery.ready_at + step.pause <= horizon:
        return False
    return _started_its_analyses(delivery, plan)
