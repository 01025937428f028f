"""How fast `stagewise analyze` replays an incident-sized recording, and how much memory it holds.

    .venv/bin/python benchmarks/replay.py [--lines 1000000] [--small 100000] [--keep DIR]

Writes two A/A recordings — identical releases, so no judge decides early and
every line is replayed — of `--small` and `--lines` requests (a 50/50 split,
1 % errors, lognormal latencies around 40 ms), then runs `stagewise analyze`
as a user would, in a fresh process each time, for the error rate and for the
latency with `sequential`, and for a gauge recording of the same length with
`--metric value`. It prints each run's wall time, lines per second and peak
resident memory (the child's ru_maxrss): memory flat in the input's length
means the two sizes' peaks are alike. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOALS = {"error-rate": 10.0, "latency": 30.0}
"""Seconds allowed for 1,000,000 requests."""


def write_requests(path: Path, lines: int, seed: int = 7) -> None:
    """An A/A recording: `lines` requests at 1,000/s, half per release, 1 % errors, latency lognormal(40 ms, 0.5)."""
    rng = random.Random(seed)
    t = 0.0
    with path.open("w", encoding="utf-8") as out:
        for _ in range(lines):
            t += rng.expovariate(1000.0)
            release = "candidate" if rng.random() < 0.5 else "baseline"
            status = 500 if rng.random() < 0.01 else 200
            latency = 40.0 * math.exp(0.5 * rng.gauss(0.0, 1.0))
            out.write(f'{{"t": {t:.4f}, "release": "{release}", "status": {status}, "latency_ms": {latency:.2f}}}\n')


def write_values(path: Path, lines: int, seed: int = 11) -> None:
    """An A/A gauge recording: every second, one value per release (a CPU share around 0.4)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
            release = "baseline" if i % 2 == 0 else "candidate"
            value = min(1.0, max(0.0, rng.gauss(0.4, 0.05)))
            out.write(json.dumps({"t": float(i // 2), "release": release, "value": round(value, 4)}) + "\n")


def run(path: Path, *args: str) -> tuple[float, float, dict[str, object]]:
    """Wall seconds, peak RSS in MiB, and the JSON result of one `stagewise analyze` process."""
    argv = [str(Path(sys.executable).with_name("stagewise")), "analyze", "--input", str(path), "--json", *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {err.read().decode()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, json.loads(out.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="write the recordings here and keep them")
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="stagewise-replay-"))
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"stagewise analyze replay benchmark: A/A recordings of {args.small:,} and {args.lines:,} lines; "
          f"{os.cpu_count()} cores")
    print(f"{'metric':<11} {'lines':>10} {'seconds':>8} {'lines/s':>10} {'peak MiB':>9} {'verdict':<11} goal")
    for size in (args.small, args.lines):
        requests, values = folder / f"requests-{size}.jsonl", folder / f"values-{size}.jsonl"
        write_requests(requests, size)
        write_values(values, size)
        cases = [("error-rate", requests, ["--metric", "error-rate"]),
                 ("latency", requests, ["--metric", "latency"]),
                 ("value", values, ["--metric", "value", "--bounds", "0:1"])]
        for metric, path, extra in cases:
            seconds, peak, result = run(path, "--judge", "sequential", *extra)
            goal = ""
            if size == 1_000_000 and metric in GOALS:
                goal = f"≤ {GOALS[metric]:g}s: {'met' if seconds <= GOALS[metric] else 'NOT met'}"
            print(f"{metric:<11} {size:>10,} {seconds:>8.1f} {size / seconds:>10,.0f} {peak:>9.1f} "
                  f"{result['verdict']!s:<11} {goal}")
        if not args.keep:
            requests.unlink()
            values.unlink()
    print(f"wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
