"""A discrete-event simulator of deliveries: the real planner and judges on a virtual clock.

    default_scenario()         the scenario shipped: 200 requests/s, 10 instances, bad release at 5% errors
    load_scenario(path)        a scenario from YAML, mistakes reported as file:line:column
    simulate(spec, stable,...) one delivery of a Service spec on a simulated fleet -> RunResult
    compare(scenario, seeds=)  every strategy, a good and a bad release, many seeds -> Comparison

Only the world is simulated — instances that start, get ready or crash; a
router that splits requests; users who send them. Every decision is taken
by the code that takes it in production: `engine.decide`, the tick the
controller runs (judges, state machine, planner).

Pure: no clock, no I/O beyond reading a scenario file, randomness only from
seeded `random.Random`s. It never imports the controller or the drivers
(the layers of docs/architecture.md), nor its sibling, the advisor.
"""

from stagewise.sim.compare import Comparison, Summary, compare, run_one, service_spec
from stagewise.sim.loop import simulate
from stagewise.sim.result import RunResult, Sample
from stagewise.sim.scenario import Scenario, default_scenario, load_scenario, load_scenario_text

__all__ = [
    "Comparison",
    "RunResult",
    "Sample",
    "Scenario",
    "Summary",
    "compare",
    "default_scenario",
    "load_scenario",
    "load_scenario_text",
    "run_one",
    "service_spec",
    "simulate",
]
