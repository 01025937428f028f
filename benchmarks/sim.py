"""The simulator's shortcuts, side by side with asking the state machine and judges every tick.

    .venv/bin/python -m benchmarks.sim [SEEDS]

Prints, per strategy, wall time and the bad release's median exposure with the
shortcuts (skip `advance` and the judges when nothing can change them) and
without (`exact=True`), and the ratio of the times.
"""

from __future__ import annotations

import statistics
import sys
import time

from stagewise.sim import default_scenario, run_one
from stagewise.sim.scenario import STRATEGY_NAMES


def main(seeds: int) -> None:
    scenario = default_scenario()
    print(f"{'strategy':<11} {'fast s':>8} {'exact s':>8} {'ratio':>6} {'bad req fast':>13} {'bad req exact':>14}")
    for name in STRATEGY_NAMES:
        walls, exposure = {}, {}
        for exact in (False, True):
            started = time.perf_counter()
            runs = [run_one(scenario, name, which, s, exact=exact) for s in range(seeds) for which in ("good", "bad")]
            walls[exact] = time.perf_counter() - started
            exposure[exact] = statistics.median(r.candidate_requests for r in runs if r.candidate == "v3")
        print(f"{name:<11} {walls[False]:8.2f} {walls[True]:8.2f} {walls[True] / walls[False]:6.1f} "
              f"{exposure[False]:13.0f} {exposure[True]:14.0f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
