"""Pipelines: environments in order (staging → production), above the controller.

    Pipelines(controller)       apply a `kind: Pipeline` spec, start a release, approve a stage, and run the
                                loop that moves each release on (runner.py)
    machine.advance(...)        pure: a release's next state and which stage gets it (machine.py)

A release moves to the next stage only after it Succeeded and soaked in the
one before (and was verified, and approved where a stage asks for people);
a failure stops it where it failed. The state lives in the store; every
delivery goes through `Controller.apply`, as a person's would.
"""

from stagewise.pipelines.runner import Pipelines, stage_spec

__all__ = ["Pipelines", "stage_spec"]
