"""Several controllers on one PostgreSQL: how 1,000 services are shared, ticked and taken over.

Usage: python -m benchmarks.controllers [--services 1000] [--seconds 20] [--lease 5,3,1]

A PostgreSQL cluster from Debian's package is started in a temporary
directory (tests/pg.py, as the tests do); `--services` idle services (a
stable release, one instance each) are stored in it; then 1, 2 and 4
controllers — each a process of its own over the fake platform and router of
`stagewise.testing` — tick for `--seconds`. For each group it prints:

- the share of services each controller holds once settled (fair: within
  ±10 % of services / N);
- tick time per service reconciled (median, p99) and store calls per tick
  (each one to three round trips to the database);
- with 2 and 4, the time until the services of a controller killed with
  SIGKILL are all held by the others (at most the lease's duration plus a
  retry once its lease expired).

The last line states the service count at which one controller falls behind
its 0.25 s tick. Leases are shorter than Argo's defaults (15 s, 10 s, 2 s) so
that the takeover is measured in seconds; it scales with `--lease`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg
from tests.pg import Cluster, server_binaries

from stagewise.controller import Controller
from stagewise.controller.leases import LeaseSettings
from stagewise.core.service import ServiceRecord
from stagewise.core.spec import ServiceSpec
from stagewise.store import open_store
from stagewise.testing import FakePlatform, FakeRouter

TICK = 0.25


def spec(name: str, port: int) -> ServiceSpec:
    return ServiceSpec.model_validate({
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": name},
        "spec": {"listen": f"127.0.0.1:{port}", "replicas": 1,
                 "release": {"version": "v1", "run": {"command": ["app", "--port", "{port}"]}},
                 "strategy": {"canary": {"steps": [{"setWeight": 50}]}}}})


def seed(url: str, services: int) -> None:
    store = open_store(url, state_dir=Path("/nonexistent"))
    try:
        for i in range(services):
            s = spec(f"svc-{i:04d}", 20000 + i)
            store.put_service(ServiceRecord(name=s.name, spec=s, stable=s.spec.release, created_at=1.0,
                                            updated_at=1.0))
    finally:
        store.close()


class Counted:
    """The store, counting the calls made to it."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return attr(*args, **kwargs)
        return counted


def controller_process(url: str, name: str, lease: LeaseSettings, stop: Any, state: str, out: Connection) -> None:
    """One controller ticking until `stop` is set; sends (time, tick seconds, held, store calls) per tick."""
    async def run() -> None:
        platform = FakePlatform(time.time, startup=0.0)
        router = FakeRouter(time.time, rate=10)
        ctl = Controller(Path(state), store=url, name=name, leases=lease, routers={"builtin": router},
                         platforms={"local": platform})
        counted = Counted(ctl.store)
        ctl.store = counted  # type: ignore[assignment]  # the same protocol, counted
        while not stop.is_set():
            before, started = counted.calls, time.perf_counter()
            await ctl.tick()
            spent = time.perf_counter() - started
            assert ctl.leases is not None
            held = len(ctl.leases.held())
            out.send((time.monotonic(), spent, held, counted.calls - before))
            await asyncio.sleep(max(0.0, TICK - spent))
        await ctl.close()
    asyncio.run(run())
    out.send(None)


def holders(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT holder, count(*) FROM leases WHERE holder <> ''"
                            " AND expires_at > extract(epoch FROM clock_timestamp()) GROUP BY holder").fetchall()
    return {r[0]: int(r[1]) for r in rows}


Sample = tuple[float, float, int, int]
"""One tick of one controller: (monotonic time, seconds spent, services held, store calls made)."""


def start_group(url: str, n: int, lease: LeaseSettings, stop: Any, state: Path) -> tuple[list[Any], list[Any]]:
    """`n` controller processes, each sending its ticks down a pipe of its own."""
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for i in range(n):
        ours, theirs = ctx.Pipe(duplex=False)
        p = ctx.Process(target=controller_process, args=(url, f"c{i + 1}", lease, stop, str(state), theirs))
        p.start()
        theirs.close()  # the child's end: once the child is gone, reading ours ends (EOFError)
        pipes.append(ours)
        procs.append(p)
    return pipes, procs


def drain(pipes: list[Any], open_pipes: set[int], samples: list[list[Sample]]) -> None:
    """Take what each controller sent so far; a pipe that ended (its controller stopped or killed) is closed."""
    for i in sorted(open_pipes):
        try:
            while pipes[i].poll():
                item = pipes[i].recv()
                if item is None:
                    open_pipes.discard(i)
                    break
                samples[i].append(item)
        except EOFError:  # the controller killed
            open_pipes.discard(i)


def summary(n: int, services: int, samples: list[list[Sample]], shares: dict[str, int],
            takeover: float | None) -> dict[str, Any]:
    per_service, calls = [], []
    for rows in samples:
        for _, spent, held, made in rows:
            if held and held <= math.ceil(services / n):  # once the shares settled
                per_service.append(spent / held)
                calls.append(made)
    per_service.sort()
    return {"n": n, "shares": dict(sorted(shares.items())), "median_ms": 1000 * statistics.median(per_service),
            "p99_ms": 1000 * per_service[int(0.99 * (len(per_service) - 1))],
            "calls": statistics.median(calls), "takeover": takeover}


def group(url: str, n: int, services: int, seconds: float, lease: LeaseSettings, state: Path) -> dict[str, Any]:
    """Start `n` controllers; once each ticks, give them `seconds` to settle their shares, note the shares, kill
    the last one (n > 1) and time until its services are held by the others; then stop them."""
    stop = multiprocessing.get_context("spawn").Event()
    pipes, procs = start_group(url, n, lease, stop, state)
    samples: list[list[Sample]] = [[] for _ in range(n)]
    settle_by = math.inf
    takeover = None
    shares: dict[str, int] = {}
    killed_at = None
    open_pipes = set(range(n))
    while open_pipes:
        drain(pipes, open_pipes, samples)
        if settle_by == math.inf and all(samples):
            settle_by = time.monotonic() + seconds
        if not shares and time.monotonic() >= settle_by:
            shares = holders(url)
            if n > 1:
                os.kill(procs[-1].pid, signal.SIGKILL)
                killed_at = time.monotonic()
        if killed_at is not None and takeover is None:
            now = holders(url)
            if f"c{n}" not in now and sum(now.values()) == services:
                takeover = time.monotonic() - killed_at
        if shares and (n == 1 or takeover is not None or time.monotonic() > (killed_at or 0) + 60):
            stop.set()
        time.sleep(0.05)
    for p in procs:
        p.join(30)
    return summary(n, services, samples, shares, takeover)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=12.0, help="to settle the shares once all tick")
    parser.add_argument("--lease", default="5,3,1", help="duration,renew deadline,retry in seconds")
    args = parser.parse_args()
    duration, deadline, retry = (float(x) for x in args.lease.split(","))
    lease = LeaseSettings(duration=duration, renew_deadline=deadline, retry=retry)
    root = Path(tempfile.mkdtemp(prefix="sw-bench-", dir="/tmp"))
    cluster = Cluster(root, server_binaries())
    cluster.init()
    cluster.start()
    results = []
    try:
        for n in (1, 2, 4):
            url = cluster.url(cluster.create_database())
            seed(url, args.services)
            results.append(group(url, n, args.services, args.seconds, lease, root / f"state-{n}"))
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.services} idle services, tick {TICK}s, lease {args.lease} s (duration, renew deadline, retry)")
    print(f"{'controllers':>11} {'per-controller share':>32} {'fair ±':>7} {'tick/service ms':>19} "
          f"{'store calls/tick':>16} {'takeover s':>10}")
    for r in results:
        fair = args.services / r["n"]
        worst = max((abs(v - fair) / fair for v in r["shares"].values()), default=math.nan)
        shares = " ".join(str(v) for v in r["shares"].values())
        takeover = f"{r['takeover']:.1f}" if r["takeover"] is not None else "-"
        print(f"{r['n']:>11} {shares:>32} {100 * worst:>6.1f}% {r['median_ms']:>8.3f} / {r['p99_ms']:<8.3f} "
              f"{r['calls']:>16.0f} {takeover:>10}")
    one = results[0]
    print(f"one controller reconciles a service in {one['median_ms']:.3f} ms (median): it falls behind its "
          f"{TICK}s tick at about {int(TICK * 1000 / one['median_ms'])} services")
    json.dump(results, sys.stderr)
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
