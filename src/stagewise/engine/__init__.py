"""The engine: one pure tick of a delivery, shared by the controller and the simulator.

    decide(delivery, plan, observation, measured=, judge=) -> Decision
        judge the open analysis runs, advance the state machine, recompile the
        plan when aborting starts; the next delivery, its events, its plan and
        the world to make real

The controller calls it once per service per tick with what the drivers
observed; the simulator calls it on a virtual clock with what its simulated
fleet and users did. Both therefore take every decision with the same code,
in the same order. Pure: no clock, no I/O — time and observations are
arguments. It never acts: committing the decision and making the world match
it is the caller's job.
"""

from stagewise.engine.tick import Decision, decide

__all__ = ["Decision", "decide"]
