"""One tick of a delivery: judge, advance, recompile, and say which world to make real.

This is the whole of what a tick decides, in one place, so that the
controller (on the wall clock, over real drivers) and the simulator (on a
virtual clock, over a simulated fleet) cannot drift apart:

1. the open analysis runs are judged on the router's counters in the
   observation and on what the metric providers `measured` (`judge_runs`);
2. the state machine moves the judged delivery at most one step (`advance`);
3. when that move starts the rollback, the plan is compiled again with the
   world the rollback starts from (`compile_plan(..., abort_world=)`): the
   rollback steps depend on it;
4. the desired world is the current step's, or none once the delivery has
   ended — then the service's steady world applies (its stable release on
   every replica), which only the caller's service record knows.

It must never read a clock, touch the world, or keep state between calls:
everything it knows comes in as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stagewise.analysis.judges.runs import Measured, judge_runs
from stagewise.core.delivery import Delivery, Event, Observation, Phase, advance, desired_world
from stagewise.core.plan import Plan, World
from stagewise.strategies import compile_plan


@dataclass(frozen=True)
class Decision:
    """What one tick decided for a delivery; nothing of it has happened yet."""

    delivery: Delivery
    """The delivery's next state, to be committed before anything is acted on."""
    events: list[Event]
    """What happened, in words, for the event log."""
    plan: Plan
    """The delivery's plan: the one given, or recompiled with its rollback when aborting started."""
    world: World | None
    """The world to make real now; none once the delivery has ended (the service's steady world applies)."""


def decide(
    delivery: Delivery,
    plan: Plan,
    observation: Observation,
    *,
    measured: Mapping[tuple[str, str], Measured] | None = None,
    judge: bool = True,
    points: bool = True,
) -> Decision:
    """The next state of `delivery` given what was observed at `observation.now`.

    `measured`: what the metric providers other than the router measured on
    this tick, keyed by (run key, template name). `judge=False` leaves the
    analysis runs unjudged on this tick: the simulator skips the judges while
    nothing it observed can change a verdict (sim/loop.py); the controller
    always judges. `points=False`: the judges look in a hurry, leaving a
    point of their history to a later look (`judge_runs`).
    """
    judged = judge_runs(delivery, observation.stats, observation.now, measured, points=points) if judge else delivery
    moved, events = advance(judged, plan, observation, fresh=judged is not delivery)
    if moved.phase is Phase.ABORTING and delivery.phase is not Phase.ABORTING:
        plan = compile_plan(moved.spec, moved.stable, abort_world=moved.abort_world)
    world = None if moved.phase.terminal else desired_world(moved, plan)
    return Decision(delivery=moved, events=events, plan=plan, world=world)
