"""Make the hook calls a delivery's committed state asks for, without stalling a tick, and bring back the answers.

Like the metric providers' measurements (controller/measure.py): each tick
asks `core.gates.due_calls` which calls are due for the delivery as
committed, starts each one not already running as a task of its own, and
hands the answers that came back since the last tick to the state machine
(`Observation.hook_answers`), which records them in the delivery. An abort
that has to happen now never waits behind a confirm hook's slow answer.

At least once: a call's id comes from the committed state (delivery,
attempt, point, hook, call number). If the controller dies after a call
was made but before its answer was committed, the restarted controller finds
the same call due and makes it again, under the same id — so a receiver sees
every call at least once, and may see one twice, which it can tell by the
id (the body's `id`, and the `X-Stagewise-Id` header of HTTP hooks). Answers
are kept in memory only until the tick that records them commits; one lost
with a crash is simply asked again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from stagewise.basics import waiting
from stagewise.core.delivery import Delivery
from stagewise.core.gate_state import HookAnswer, HookCall
from stagewise.core.gates import due_calls, trim
from stagewise.core.plan import Plan
from stagewise.notify import Answer, Notifier


@dataclass
class _Running:
    call: HookCall
    task: asyncio.Task[Answer]


class HookRunner:
    """The hook calls in flight, per service, by call id."""

    def __init__(self, notifier: Notifier, clock: Callable[[], float]) -> None:
        self._notifier = notifier
        self._clock = clock
        self._running: dict[str, dict[str, _Running]] = {}

    def collect(self, delivery: Delivery, plan: Plan, now: float) -> list[HookAnswer]:
        """The answers that came back since the last tick; and start the calls due now."""
        if not delivery.spec.spec.hooks and delivery.service not in self._running:
            return []  # no hook, no call in flight: nothing to collect or start
        running = self._running.setdefault(delivery.service, {})
        answers = []
        for key, flight in list(running.items()):
            if flight.task.done():
                del running[key]
                answers.append(self._answer(flight))
        due = due_calls(delivery, plan, now)
        for call in due:
            if call.key not in running and all(a.key != call.key for a in answers):
                running[call.key] = _Running(call, asyncio.create_task(self._notifier.call(hook=call.hook,
                                                                                            body=call.body)))
        wanted = {c.key for c in due}
        for key in [k for k in running if k not in wanted and k.split("/")[0] != _prefix(delivery)]:
            running.pop(key).task.cancel()  # a call of an earlier delivery or attempt: nobody waits for it
        return answers

    def _answer(self, flight: _Running) -> HookAnswer:
        call = flight.call
        try:
            answer = flight.task.result()
        except Exception as exc:  # noqa: BLE001 -- a bug in a call must not stop the loop: it is a failed answer
            answer = Answer(False, f"internal error: {type(exc).__name__}", trim(str(exc)), 0.0)
        return HookAnswer(key=call.key, point=call.point, hook=call.hook.name, ok=answer.ok, status=answer.status,
                          message=trim(answer.said), duration=answer.seconds, at=self._clock())

    def forget(self, service: str) -> None:
        for flight in self._running.pop(service, {}).values():
            flight.task.cancel()

    async def close(self) -> None:
        flights = [f for by_key in self._running.values() for f in by_key.values()]
        self._running.clear()
        await waiting.cancelled(f.task for f in flights)


def _prefix(delivery: Delivery) -> str:
    return f"{delivery.id}.{delivery.attempt}"
