"""OpenSSH's client over a ControlMaster against asyncssh, on namespace hosts: the ssh platform's choice.

    .venv/bin/python benchmarks/ssh_transport.py [--commands 100] [--json]

Root only (stagewise.testing.hosts); asyncssh from the `bench` extra. For each
transport, on one host: the first command (the connection, with its
handshake), then `--commands` small commands one after another over that one
connection, then as many again all at once on 4 hosts. The command is the same
fixed `sh -c` script for both, as the platform runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stagewise.core.platform_spec import HostSpec, SshSpec
from stagewise.platforms._ssh_transport import Connection
from stagewise.testing.hosts import Fleet, TestHost, unavailable_reason

SCRIPT = 'echo "$1 $(date +%s)"'


async def openssh(fleet: Fleet, hosts: list[TestHost], n: int, sockets: Path) -> dict[str, float]:
    options = SshSpec.model_validate(fleet.ssh_options())
    conns = [Connection(HostSpec(target=h.target), options, sockets) for h in hosts]
    started = time.perf_counter()
    await conns[0].run(SCRIPT, ["first"], timeout=10)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(n):
        await conns[0].run(SCRIPT, [str(i)], timeout=10)
    serial = time.perf_counter() - started
    started = time.perf_counter()
    await asyncio.gather(*(c.run(SCRIPT, [str(i)], timeout=30) for i in range(n // len(conns)) for c in conns))
    parallel = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in conns))
    return {"first_s": first, "serial_per_command_ms": serial / n * 1000, "parallel_total_s": parallel}


async def asyncssh_transport(fleet: Fleet, hosts: list[TestHost], n: int) -> dict[str, float]:
    import asyncssh

    def connect(h: TestHost) -> Any:
        return asyncssh.connect(h.address, username=h.user, client_keys=[str(fleet.identity)],
                                known_hosts=str(fleet.known_hosts))

    remote = " ".join(shlex.quote(a) for a in ["sh", "-c", SCRIPT, "stagewise"])
    started = time.perf_counter()
    first_conn = await connect(hosts[0])
    await first_conn.run(remote + " first", check=True)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(n):
        await first_conn.run(f"{remote} {i}", check=True)
    serial = time.perf_counter() - started
    conns = [first_conn, *[await connect(h) for h in hosts[1:]]]
    started = time.perf_counter()
    await asyncio.gather(*(c.run(f"{remote} {i}", check=True) for i in range(n // len(conns)) for c in conns))
    parallel = time.perf_counter() - started
    for c in conns:
        c.close()
        await c.wait_closed()
    return {"first_s": first, "serial_per_command_ms": serial / n * 1000, "parallel_total_s": parallel}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"benchmarks/ssh_transport.py: {reason}", file=sys.stderr)
        return 2
    results: dict[str, dict[str, float]] = {}
    with Fleet(4) as fleet, tempfile.TemporaryDirectory() as sockets:
        results["openssh"] = asyncio.run(openssh(fleet, fleet.hosts, args.commands, Path(sockets)))
        try:
            results["asyncssh"] = asyncio.run(asyncssh_transport(fleet, fleet.hosts, args.commands))
        except ImportError:
            print("asyncssh is not installed (pip install -e '.[bench]'): OpenSSH alone", file=sys.stderr)
    for name, r in results.items():
        print(f"{name:<9} first command (connect) {r['first_s'] * 1000:7.1f} ms; {args.commands} commands one after "
              f"another {r['serial_per_command_ms']:6.2f} ms each; {args.commands} at once on 4 hosts "
              f"{r['parallel_total_s'] * 1000:7.1f} ms")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
