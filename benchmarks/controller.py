"""One controller carrying many services: what a reconcile pass costs, in time, CPU, store writes and memory.

    .venv/bin/python benchmarks/controller.py [--scenarios 100:0.5,1000:0.5,...] [--ticks 120] [--budget 60] [--json]

Each scenario runs in a process of its own (so that its memory is its own):
N services on the fakes of `stagewise.testing` — `FakePlatform` (instances
ready half a second after they start) and `SteadyRouter` (counters by
arithmetic, cheap enough that the router is not what is measured) — over the
real SQLite store, on the wall clock, with the controller's tick of 0.25 s.
A share of the services has a canary in flight (steps with timed pauses and
a sequential analysis of errors and latency; a delivery that succeeds is
followed by the next release at once, through `apply`, so the share stays in
flight); the others are idle: their stable release serves, nothing moves.

The benchmark calls `tick()` every 0.25 s (at once when a tick overran), and
after each, as the server's loop does, `collect_between_ticks()` (in the gap
before the next tick, when it fits there); it measures each tick:

- wall time (median, p99, max) and CPU time of the process (the machine is
  shared: CPU time is what the controller itself spent);
- CPU per service: the CPU of a tick over the number of services;
- store writes: transactions and rows changed per tick;
- looks put off: looks (of an analysis's judges, or at a step's instances
  not ready yet) that a tick short of time left to the next tick
  (`controller/schedule.py`, `Budget`), per tick; and for each look put off,
  the ticks in a row it waited (three while the ticks have time, six at most);
- memory: the process's peak resident size (VmHWM), setup included;
- steps decided on time: each timed pause of a canary is due at the moment
  its world was ready plus its duration; it is decided on time when the
  tick that ends it began at most one tick (0.25 s) after that moment;
- ready seen: for each step that waits for its instances, the seconds from
  the moment they were all ready (or the step began, if later) to the
  decision that saw them ready — a tick at most, seven when looks at them
  were put off (p99 and max).

Default scenarios: 100, 1,000 and 10,000 services with half in flight, and
the goals' own cases — 1,000 all in flight, 10,000 all idle. A scenario
stops after `--ticks` measured ticks (120: 30 seconds at 0.25 s) or
`--budget` seconds of them, whichever comes first (at least 3 ticks), and
says how many it measured. A p99 of fewer than a hundred ticks would be
their maximum, which the table shows on its own. The deliveries in flight
all begin together: the first ten seconds are the heaviest, as each step
comes due for hundreds of them at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stagewise.controller import Controller
from stagewise.controller.schedule import next_beat
from stagewise.core.delivery import Delivery, Event, Phase
from stagewise.core.service import ServiceRecord
from stagewise.core.spec import ServiceSpec
from stagewise.errors import StagewiseError
from stagewise.testing import FakePlatform, SteadyRouter

TICK = 0.25
REPLICAS = 4
DEFAULT_SCENARIOS = "100:0.5,1000:0.5,10000:0.5,1000:1,10000:0"
GOAL_TICK_IN_FLIGHT = 0.250
GOAL_TICK_IDLE = 0.100
GOAL_MEMORY = 1024 ** 3


def spec(name: str, index: int, version: int) -> ServiceSpec:
    """Service `name` at release v`version`: a canary whose pauses and analysis differ a little per service."""
    steps: list[dict[str, Any]] = [
        {"setWeight": 20}, {"pause": {"duration": f"{1 + index % 4}s"}}, {"setWeight": 50},
        {"analysis": {"templates": ["errors", "latency"], "duration": f"{3 + index % 3}s"}},
        {"setWeight": 80}, {"pause": {"duration": f"{1 + index % 2}s"}},
    ]
    return ServiceSpec.model_validate({
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": name},
        "spec": {
            "listen": f"127.0.0.1:{20000 + index % 40000}", "replicas": REPLICAS,
            "release": {"version": f"v{version}", "run": {"command": ["app", "--port", "{port}"]}},
            "strategy": {"canary": {"steps": steps}},
            "analysis": {"errors": {"metric": "error-rate"}, "latency": {"metric": "latency"}},
            "progressDeadline": "10m",
        },
    })


class Watch:
    """Told of every committed change: re-applies what succeeded, times each timed pause's end, and how long
    each step took to see its instances ready."""

    def __init__(self, controller: Controller, platform: FakePlatform) -> None:
        self.controller = controller
        self.platform = platform
        self.ended: list[str] = []
        self.tick_started = 0.0
        """When the tick under way began (wall clock)."""
        self.lateness: list[float] = []
        """Seconds from each timed pause's due time to the decision that ended it."""
        self.late = 0
        """Pauses whose ending tick began more than a tick after they were due."""
        self.ready_seen: list[float] = []
        """Seconds from the moment each step's instances were ready (or it began, if later) to the decision that
        saw them ready."""

    def delivery_changed(self, *, before: Delivery | None, after: Delivery, events: Sequence[Event],
                         now: float) -> None:
        if after.phase.terminal and (before is None or not before.phase.terminal):
            self.ended.append(after.service)
        if before is None or before.phase.terminal:
            return
        if before.ready_at is None:
            self._seen_ready(before, after, now)
            return
        if (before.step, before.phase) == (after.step, after.phase):
            return
        step = before.current(self.controller.plan(before))
        if step is None or not step.pause or step.manual:
            return
        due = before.ready_at + step.pause
        decided = max((e.at for e in events), default=now)  # a tick decides a pause that ended meanwhile later
        self.lateness.append(decided - due)
        if self.tick_started - due > TICK:
            self.late += 1

    def _seen_ready(self, before: Delivery, after: Delivery, now: float) -> None:
        moving = (Phase.PROGRESSING, Phase.PROMOTING)
        if before.phase not in moving or before.waiting is not None:
            return
        if after.ready_at is None and (after.step == before.step or after.phase not in (*moving, Phase.SUCCEEDED)):
            return  # not seen ready: something else changed
        instances = self.platform.instances.get(before.service, {}).values()
        ready = max((i.started_at + self.platform.startup for i in instances), default=0.0)
        self.ready_seen.append(now - max(ready, before.progress_at))

    def service_events(self, *, service: str, events: Sequence[Event]) -> None:
        return None

    def pass_finished(self, *, seconds: float) -> None:
        return None

    def reconcile_failed(self, *, service: str, error: StagewiseError, internal: bool) -> None:
        print(f"reconcile of {service} failed: {error}", file=sys.stderr)


class Writes:
    """Counts the store's write transactions and the rows they changed."""

    def __init__(self, store: Any) -> None:
        self.transactions = 0
        self.store = store
        write = store._write

        @contextmanager
        def counting(**kwargs: Any) -> Iterator[Any]:
            self.transactions += 1
            with write(**kwargs) as conn:
                yield conn

        store._write = counting

    def rows(self) -> int:
        return int(self.store._conn.total_changes)


def memory() -> dict[str, int]:
    """The process's resident size now and at its peak, bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


async def populate(controller: Controller, platform: FakePlatform, n: int, share: float) -> list[str]:
    """N services serving v1; every 1/share-th gets a canary to v2. The names of those in flight."""
    store = controller.store
    conn = store._conn  # type: ignore[attr-defined]
    conn.execute("PRAGMA synchronous = OFF")  # setup only: the measured ticks commit with FULL
    now = time.time()
    names = [f"svc-{i:05d}" for i in range(n)]
    for i, name in enumerate(names):
        s = spec(name, i, 1)
        store.put_service(ServiceRecord(name=name, spec=s, stable=s.spec.release, created_at=now, updated_at=now))
        await platform.start(service=name, release=s.spec.release, count=REPLICAS)
    moving = [i for i in range(n) if share > 0 and math.floor(i * share) != math.floor((i - 1) * share)]
    await asyncio.sleep(platform.startup)  # every stable instance ready
    for i in moving:
        await controller.apply(spec(names[i], i, 2))
    conn.execute("PRAGMA synchronous = FULL")
    return [names[i] for i in moving]


async def one(n: int, share: float, ticks: int, budget: float) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="stagewise-bench-controller-"))
    platform = FakePlatform(time.time, startup=0.5)
    router = SteadyRouter(time.time, rate=100)
    controller = Controller(state, clock=time.time, tick=TICK, routers={"builtin": router},
                            platforms={"local": platform})
    watch = Watch(controller, platform)
    controller.observer = watch
    started = time.perf_counter()
    moving = await populate(controller, platform, n, share)
    versions = dict.fromkeys(moving, 2)
    index = {f"svc-{i:05d}": i for i in range(n)}
    setup = time.perf_counter() - started
    warm = time.perf_counter()
    # The first pass reconciles every service and sends every route table; its slowest part goes on past the
    # tick's time and is decided on the pass after it, with the services whose resync came due meanwhile:
    # setup, both, not the steady state.
    for first in (True, False):
        await controller.tick()
        await asyncio.gather(*controller._background)
        if first:
            controller.keep_still()  # as the server's loop does after its first pass
    warm = time.perf_counter() - warm
    writes = Writes(controller.store)
    walls, cpus, transactions, rows, applies, put_off, waited = [], [], [], [], [], [], list[int]()
    watch.lateness.clear()
    watch.late = 0
    watch.ready_seen.clear()
    measuring = time.perf_counter()
    next_at = time.perf_counter()
    while len(walls) < ticks and (time.perf_counter() - measuring < budget or len(walls) < 3):
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        watch.tick_started = time.time()
        t0, c0, w0, r0 = time.perf_counter(), time.process_time(), writes.transactions, writes.rows()
        waiting = controller._budget.waiting
        await controller.tick()
        waited += [controller._budget.waited(name) for name in waiting - controller._budget.waiting]
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        transactions.append(writes.transactions - w0)
        rows.append(writes.rows() - r0)
        put_off.append(len(controller._budget.waiting))
        next_at = next_beat(next_at, time.perf_counter(), TICK)  # as the server's loop
        controller.collect_between_ticks(until=next_at)  # as the server's loop does after each tick
        ended, watch.ended = watch.ended, []
        for name in ended:  # the next release at once, through the API's verb, between two ticks
            versions[name] += 1
            t0 = time.perf_counter()
            await controller.apply(spec(name, index[name], versions[name]))
            applies.append(time.perf_counter() - t0)
    mem = memory()
    await controller.close()
    shutil.rmtree(state, ignore_errors=True)
    return {
        "services": n, "in_flight": len(moving), "ticks": len(walls), "setup_s": setup, "first_tick_s": warm,
        "wall": walls, "cpu": cpus, "transactions": transactions, "rows": rows, "applies": applies,
        "put_off": put_off, "waited": waited,
        "paused_steps": len(watch.lateness), "late_steps": watch.late, "lateness": watch.lateness,
        "lateness_max": max(watch.lateness, default=0.0), "ready_seen": watch.ready_seen,
        "rss": mem["VmRSS"], "peak_rss": mem["VmHWM"],
    }


# --- the table ----------------------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else math.nan


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def row(r: dict[str, Any]) -> list[str]:
    n = r["services"]
    return [
        f"{n:,}", f"{r['in_flight']:,}", str(r["ticks"]),
        ms(statistics.median(r["wall"])), ms(quantile(r["wall"], 0.99)), ms(max(r["wall"])),
        ms(statistics.median(r["cpu"])), ms(quantile(r["cpu"], 0.99)),
        f"{statistics.median(r['cpu']) / n * 1e6:,.0f} µs",
        f"{statistics.median(r['transactions']):,.0f} / {statistics.median(r['rows']):,.0f}",
        f"{statistics.median(r['put_off']):,.0f} / {max(r['put_off']):,}",
        f"{quantile(r['waited'], 0.99):.0f} / {max(r['waited'])}" if r["waited"] else "-",
        f"{r['late_steps']}/{r['paused_steps']}",
        f"{quantile(r['lateness'], 0.99):.2f} s" if r["lateness"] else "-",
        f"{r['lateness_max']:.2f} s",
        f"{quantile(r['ready_seen'], 0.99):.2f} / {max(r['ready_seen']):.2f} s" if r["ready_seen"] else "-",
        f"{r['peak_rss'] / 2**20:,.0f} MiB",
    ]


HEADER = ["services", "in flight", "ticks", "wall p50", "wall p99", "wall max", "CPU p50", "CPU p99",
          "CPU/service", "writes/tick tx/rows", "looks put off p50/max",
          "put off ticks p99/max", "late steps", "late p99", "late max",
          "ready seen p99/max", "memory peak"]


def table(results: list[dict[str, Any]]) -> str:
    rows = [HEADER] + [row(r) for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def goals(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        p99 = quantile(r["wall"], 0.99)
        if r["services"] == 1000 and r["in_flight"] == 1000:
            out.append(_goal("1,000 in flight: tick p99 under 250 ms", ms(p99), p99 < GOAL_TICK_IN_FLIGHT))
            out.append(_goal("1,000 in flight: every step decided within one tick of its due time",
                             f"{r['late_steps']} of {r['paused_steps']} timed pauses late, the latest "
                             f"{r['lateness_max']:.2f} s after its due time", r["late_steps"] == 0))
        if r["services"] == 10000 and r["in_flight"] == 0:
            out.append(_goal("10,000 idle: a tick under 100 ms", f"p99 {ms(p99)}, max {ms(max(r['wall']))}",
                             p99 < GOAL_TICK_IDLE))
            out.append(_goal("10,000 idle: memory under 1 GiB", f"{r['peak_rss'] / 2**20:,.0f} MiB peak",
                             r["peak_rss"] < GOAL_MEMORY))
    return out


def _goal(what: str, figure: str, met: bool) -> str:
    return f"{'met    ' if met else 'NOT MET'}  {what}: {figure}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                        help="services:share in flight, comma-separated (default: %(default)s)")
    parser.add_argument("--ticks", type=int, default=120, help="measured ticks per scenario at most")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of measured ticks per scenario at most")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        n, share = args.one.split(":")
        print(json.dumps(asyncio.run(one(int(n), float(share), args.ticks, args.budget))))
        return
    results = []
    for scenario in args.scenarios.split(","):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--one", scenario, "--ticks", str(args.ticks),
                               "--budget", str(args.budget)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"scenario {scenario} failed:\n{done.stderr}")
        result = json.loads(done.stdout.splitlines()[-1])
        result["run_s"] = time.perf_counter() - started
        results.append(result)
        print(f"{scenario}: {result['ticks']} ticks, setup {result['setup_s']:.1f} s, first tick "
              f"{result['first_tick_s']:.1f} s, whole run {result['run_s']:.0f} s", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results))
        return
    print(table(results))
    print()
    print("\n".join(goals(results)))


if __name__ == "__main__":
    main()
