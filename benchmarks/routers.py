"""The three routers against one fast backend, side by side in one run.

    .venv/bin/python benchmarks/routers.py [--seconds 5] [--connections 32] [--switches 50] [--json]

Needs `wrk`, `haproxy` and `nginx` (Debian: apt-get install wrk haproxy nginx-light).

What it measures, on loopback, each router started through its own stagewise
driver exactly as the controller starts it:

1. Throughput and latency: `wrk` (1 thread, keep-alive connections) against
   the backend directly, then through builtin, HAProxy and nginx: requests/s,
   p50 and p99, and each as a share of direct and of HAProxy.
2. Switch-to-effect: `apply()` a table moving all traffic from v1 to v2 (and
   back, alternately); the time from `apply()` returning to the first response
   from the new release on a keep-alive connection sending requests back to
   back (median and p99 of N switches). For nginx, whose `apply()` is a checked
   configuration and a graceful reload, the time `apply()` itself takes.
3. Failed verdict to no new request: with load on a 50/50 split between a good
   and a bad release, the controller reacts to a Failed verdict by applying the
   rollback table in the same tick; the time from that `apply()` call to the
   last request the bad release received (from its access log, millisecond
   stamps).

The backend is nginx serving a static response (`worker_processes 1`), the
fastest thing on the box, so that the routers are what is measured. The
machine this runs on in CI has 2 cores: every data plane gets one — HAProxy
`nbthread 1`, nginx `worker_processes 1`, the builtin router is one process
with one event loop — and wrk runs one thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stagewise.basics.ports import free_port
from stagewise.core.routes import Endpoint, RouteTable
from stagewise.routers import Router
from stagewise.routers.builtin import BuiltinRouter
from stagewise.routers.haproxy import HaproxyRouter
from stagewise.routers.nginx import NginxRouter

KINDS = ("builtin", "haproxy", "nginx")




class Backend:
    """nginx answering `200 ok` with `X-Version`, one port per release; logs arrival times."""

    def __init__(self, folder: Path, releases: list[str]) -> None:
        self.folder = folder
        self.ports = {r: free_port() for r in releases}
        folder.mkdir(parents=True)
        servers = "\n".join(
            f"  server {{ listen 127.0.0.1:{port} backlog=4096; access_log {folder}/{r}.log stamp; "
            f"location / {{ add_header X-Version {r}; return 200 'ok'; }} }}"
            for r, port in self.ports.items())
        (folder / "nginx.conf").write_text(
            f"worker_processes 1;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            f"http {{\n  client_body_temp_path {folder}/tmp;\n  keepalive_requests 1000000;\n"
            "  log_format stamp '$msec';\n" + servers + "\n}\n")
        subprocess.run(["nginx", "-p", f"{folder}/", "-c", str(folder / "nginx.conf"), "-e",
                        str(folder / "error.log")], check=True)

    def address(self, release: str) -> str:
        return f"127.0.0.1:{self.ports[release]}"

    def arrivals(self, release: str) -> list[float]:
        return [float(line) for line in (self.folder / f"{release}.log").read_text().split()]

    def stop(self) -> None:
        pid = int((self.folder / "nginx.pid").read_text())
        os.kill(pid, signal.SIGQUIT)


def wrk(url: str, seconds: float, connections: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    quantiles = {q: _ms(v) for q, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        print(f"  wrk saw errors on {url}: {errors and errors.group(0)} {socket_errors and socket_errors.group(0)}",
              file=sys.stderr)
    return {"rps": rps, "p50_ms": quantiles["50"], "p99_ms": quantiles["99"]}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


class KeepAlive:
    """One keep-alive connection sending `GET /` and reading X-Version; minimal, for timing."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def version(self) -> str:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = await asyncio.open_connection("127.0.0.1", self.port)
            reader, writer = self.conn
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError):
                await self.close()  # a reload closed the idle connection: once more on a new one
                if attempt:
                    raise
                continue
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            if re.search(rb"(?i)\r\nconnection:\s*close", head):
                await self.close()
            match = re.search(rb"(?i)\r\nx-version:\s*(\S+)", head)
            return match.group(1).decode() if match else ""
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


def table(port: int, backend: Backend, weights: dict[str, int]) -> RouteTable:
    return RouteTable(service="bench", listen=f"127.0.0.1:{port}", stable="v1", weights=weights,
                      endpoints=tuple(Endpoint(id=f"{r}-1", release=r, address=backend.address(r))
                                      for r in weights))


async def switch_to_effect(router: Router, port: int, backend: Backend, n: int) -> dict[str, float]:
    """Median and p99 of: apply() returned → first response from the new release; and of apply() itself."""
    client = KeepAlive(port)
    effects, applies = [], []
    try:
        for i in range(n):
            new, old = ("v2", "v1") if i % 2 == 0 else ("v1", "v2")
            started = time.perf_counter()
            await router.apply(table=table(port, backend, {new: 100, old: 0}))
            applied = time.perf_counter()
            while await client.version() != new:
                pass
            effects.append((time.perf_counter() - applied) * 1000)
            applies.append((applied - started) * 1000)
    finally:
        await client.close()
    return {"effect_p50_ms": statistics.median(effects), "effect_p99_ms": _p99(effects),
            "apply_p50_ms": statistics.median(applies), "apply_p99_ms": _p99(applies)}


async def failed_to_quiet(router: Router, port: int, backend: Backend, trials: int) -> dict[str, float]:
    """From the rollback apply() call to the last request the bad release got, under load."""
    gaps = []
    for _ in range(trials):
        await router.apply(table=table(port, backend, {"v1": 50, "bad": 50}))
        load = await asyncio.create_subprocess_exec("wrk", "-t1", "-c8", "-d2s", f"http://127.0.0.1:{port}/",
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(0.7)
        verdict = time.time()
        await router.apply(table=table(port, backend, {"v1": 100, "bad": 0}))
        await load.wait()
        last = max((t for t in backend.arrivals("bad") if t > verdict - 1), default=verdict)
        gaps.append(max(0.0, last - verdict) * 1000)
    return {"quiet_p50_ms": statistics.median(gaps), "quiet_max_ms": max(gaps)}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def make_router(kind: str, state: Path) -> Router:
    if kind == "builtin":
        return BuiltinRouter(state)
    if kind == "haproxy":
        return HaproxyRouter(state, threads=1)
    return NginxRouter(state, workers=1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="sw-bench-", dir="/tmp"))
    backend = Backend(root / "backend", ["v1", "v2", "bad"])
    results: dict[str, Any] = {}
    try:
        await asyncio.sleep(0.2)
        results["direct"] = wrk(f"http://{backend.address('v1')}/", args.seconds, args.connections)
        for kind in args.routers:
            router = make_router(kind, root / kind)
            port = free_port()
            try:
                await router.apply(table=table(port, backend, {"v1": 100}))
                await asyncio.sleep(0.2)
                results[kind] = wrk(f"http://127.0.0.1:{port}/", args.seconds, args.connections)
                results[kind] |= await switch_to_effect(router, port, backend, args.switches)
                results[kind] |= await failed_to_quiet(router, port, backend, args.trials)
            finally:
                await router.stop(service="bench")
                await router.close()
    finally:
        backend.stop()
        await asyncio.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    direct = results["direct"]["rps"]
    haproxy = results.get("haproxy", {}).get("rps")
    lines = [
        f"routers on loopback, one run: wrk -t1 -c{args.connections} -d{args.seconds:g}s; backend nginx static "
        "(worker_processes 1); HAProxy nbthread 1, nginx worker_processes 1, builtin 1 process / 1 event loop; "
        f"{os.cpu_count()} CPUs",
        "",
        f"{'':10} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'÷direct':>8} {'÷haproxy':>9}"
        f" {'switch p50':>10} {'p99':>6} {'apply p50':>9} {'p99':>6} {'quiet p50':>9} {'max':>6}",
    ]
    for name, r in results.items():
        row = (f"{name:10} {r['rps']:9.0f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['rps'] / direct:8.2f} "
               + (f"{r['rps'] / haproxy:9.2f}" if haproxy else f"{'':9}"))
        if "effect_p50_ms" in r:
            row += (f" {r['effect_p50_ms']:10.2f} {r['effect_p99_ms']:6.2f} {r['apply_p50_ms']:9.2f}"
                    f" {r['apply_p99_ms']:6.2f} {r['quiet_p50_ms']:9.1f} {r['quiet_max_ms']:6.1f}")
        lines.append(row)
    lines += [
        "",
        "switch: apply() returned → first response from the new release (ms; all traffic v1→v2, alternately back)",
        "apply: how long apply() took (for nginx this is its reload time: a checked configuration, SIGHUP,",
        "       new workers up and the old ones finished)",
        "quiet: rollback apply() called (a Failed verdict) → last request the bad release received (ms, from",
        "       its access log, millisecond stamps)",
    ]
    if haproxy and "builtin" in results:
        share = results["builtin"]["rps"] / haproxy
        lines.append(f"builtin at {share:.0%} of HAProxy's requests/s (target ≥ 50%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per router")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--switches", type=int, default=50)
    parser.add_argument("--trials", type=int, default=10, help="Failed → no new request trials")
    parser.add_argument("--routers", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for program in ("wrk", "nginx", *(["haproxy"] if "haproxy" in args.routers else [])):
        if shutil.which(program) is None and not os.access(f"/usr/sbin/{program}", os.X_OK):
            parser.error(f"{program} is not installed (Debian: apt-get install wrk haproxy nginx-light)")
    try:
        import uvloop

        results = uvloop.run(run(args))
    except ImportError:
        results = asyncio.run(run(args))
    print(json.dumps(results, indent=2) if args.json else report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
