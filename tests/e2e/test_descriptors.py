"""Every process the server starts holds the listening sockets it needs and no other.

The data plane outlives the server by design, so a listening socket it
inherits by mistake lives on with it: the server's own (its port stays taken,
and a restart fails), or one the server itself inherited from whoever started
it. After an apply, the router (builtin, HAProxy or nginx, with its workers),
every instance, and a `command` analysis provider's program may hold only
their own listeners: the service's address, the instance's port, none.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import SERVICE, Stagewise, spec_json
from tests.e2e.dataplane import descendants, held_by, router_pid

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# The `command` provider's program: writes the listening sockets it holds, as `ss` reports them.
REPORT_LISTENERS = textwrap.dedent(
    """
    import json, os, subprocess, sys
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    mine = [line.split()[3] for line in out.splitlines() if f"pid={os.getpid()}," in line]
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(mine) + "\\n")
    """
)


def started_by_server(sw: Stagewise) -> dict[int, set[str]]:
    """Each process of the service's data plane, with the listening addresses it may hold."""
    allowed: dict[int, set[str]] = {}
    for pid in descendants(router_pid(sw.state, sw.router, SERVICE)):
        allowed[pid] = {sw.listen}
    records = sorted((sw.state / "instances" / SERVICE).glob(f"{SERVICE}-*.json"))
    assert records, "no instance records"
    for path in records:
        record = json.loads(path.read_text())
        for pid in descendants(record["pid"]):
            allowed[pid] = {f"127.0.0.1:{record['port']}"}
    return allowed


def inheritable(pid: int) -> dict[int, str]:
    """The descriptors above stderr of `pid` without close-on-exec, and what they are."""
    found = {}
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            flags = next(line for line in info.read_text().splitlines() if line.startswith("flags:"))
            target = os.readlink(f"/proc/{pid}/fd/{info.name}")
        except OSError:
            continue  # closed meanwhile
        if not int(flags.split()[1], 8) & os.O_CLOEXEC and int(info.name) > 2:
            found[int(info.name)] = target
    return found


def audit(sw: Stagewise) -> dict[int, set[str]]:
    """The listeners each process holds beyond the ones it may; empty when all is well."""
    extra = {}
    for pid, allowed in started_by_server(sw).items():
        held = held_by(pid)
        if held - allowed:
            extra[pid] = held - allowed
    return extra


@pytest.mark.parametrize("stagewise", ["builtin", "haproxy", "nginx"], indirect=True)
def test_the_data_plane_inherits_no_listening_socket(stagewise: Stagewise, tmp_path: Path) -> None:
    # The server inherits a listening socket from its parent, as from a careless supervisor or shell.
    with socket.create_server(("127.0.0.1", 0)) as stray:
        stray.set_inheritable(True)
        stagewise.stop()
        stagewise.start(pass_fds=(stray.fileno(),))
    assert stagewise.client is not None
    server = json.loads((stagewise.state / "server.json").read_text())["url"].removeprefix("http://")

    stagewise.apply("v1", {"full": {}})
    assert stagewise.wait()["phase"] == "Succeeded"
    assert audit(stagewise) == {}, f"the server listens on {server}"

    reports = tmp_path / "command-listeners.jsonl"
    doc: dict[str, Any] = json.loads(spec_json(stagewise.listen, "v2", {"canary": {"steps": [
        {"setWeight": 50}, {"analysis": {"templates": ["listeners"], "duration": "2s"}}]}},
        router=stagewise.router))
    doc["spec"]["analysis"]["listeners"] = {"provider": "command", "judge": "threshold", "interval": "1s",
                                            "args": [sys.executable, "-c", REPORT_LISTENERS, str(reports)]}
    stagewise.client.post("/api/v1/apply", {"spec": json.dumps(doc), "filename": "v2.yaml"})
    assert stagewise.wait()["phase"] == "Succeeded"
    assert audit(stagewise) == {}, f"the server listens on {server}"
    assert stagewise.proc is not None
    assert inheritable(stagewise.proc.pid) == {}, "the server would hand these to every process it starts"
    runs = [json.loads(line) for line in reports.read_text().splitlines()]
    assert runs and all(held == [] for held in runs), runs
