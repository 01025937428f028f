"""Roles: each route of the API against no token, a wrong one, and a viewer's, an operator's and an admin's.

The table below is the contract — the least role each operation needs — and the test first checks that it
names every operation the OpenAPI document has, so a new route cannot escape it. Each route is called with
every caller: the roles below its own are refused (401 without a valid token, 403 with a smaller role), the
others get past the check (their answer is then the route's own: 200, 404 for an unknown name, 409, ...).
Then the audit log must name the caller of every mutating call, allowed or refused.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stagewise.api.server import read_token
from tests.api.conftest import serve, spec_text

READ, OPEN = "read", "open"
LEAST_ROLE = {
    "health": OPEN,
    "listServices": READ, "getService": READ, "serviceHistory": READ, "serviceEvents": READ, "eventStream": READ,
    "listPipelines": READ, "getPipeline": READ, "metrics": READ,
    "whoami": "viewer",
    "promote": "operator", "pause": "operator", "resume": "operator", "approve": "operator",
    "approvePipeline": "operator",
    "apply": "admin", "abort": "admin", "retry": "admin", "undo": "admin", "deleteService": "admin",
    "release": "admin", "listTokens": "admin", "createToken": "admin", "deleteToken": "admin", "audit": "admin",
}
RANK = {"viewer": 0, "operator": 1, "admin": 2}
CALLERS = ("none", "wrong", "viewer", "operator", "admin")


@pytest.fixture(params=["open", "token"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[httpx.Client, str]]:
    for client in serve(tmp_path, "token" if request.param == "token" else "open"):
        yield client, request.param


def headers_of(tokens: dict[str, str], caller: str) -> dict[str, str]:
    if caller == "none":
        return {}
    return {"Authorization": f"Bearer {tokens.get(caller, 'not-a-token')}"}


def expected(least: str, caller: str, reads: str) -> int | None:
    """401 or 403 when `caller` must be refused; None when it must get past the check."""
    if least == OPEN or (least == READ and reads == "open"):
        return None
    needed = "viewer" if least == READ else least
    if caller in ("none", "wrong"):
        return 401
    return 403 if RANK[caller] < RANK[needed] else None


def call(client: httpx.Client, method: str, path: str, op: str, headers: dict[str, str]) -> httpx.Response:
    url = path.replace("{name}", "nope")
    body: Any = None
    if op == "apply":
        body = {"spec": spec_text("v1", {"full": {}})}
    elif op == "createToken":
        body = {"name": f"t{time.monotonic_ns()}", "role": "viewer"}
    elif op == "release":
        body = {"version": "v1"}
    if op == "eventStream":
        with client.stream("GET", url, headers=headers) as r:
            return r
    return client.request(method.upper(), url, headers=headers, json=body)


def test_every_route_refuses_every_role_below_its_own_and_the_audit_names_the_caller(
        server: tuple[httpx.Client, str], tmp_path: Path) -> None:
    client, reads = server
    admin = {"Authorization": f"Bearer {read_token(tmp_path)}"}
    tokens = {"admin": read_token(tmp_path) or ""}
    for role in ("viewer", "operator"):
        made = client.post("/api/v1/tokens", json={"name": f"{role}-1", "role": role}, headers=admin)
        assert made.status_code == 200, made.text
        tokens[role] = made.json()["token"]
    doc = client.get("/openapi.json").json()
    operations = [(m, p, op["operationId"]) for p, ops in doc["paths"].items() for m, op in ops.items()]
    assert {op for _, _, op in operations} == set(LEAST_ROLE), "every operation is in the table, and only those"
    matrix: dict[str, dict[str, int]] = {}
    for method, path, op in operations:
        matrix[op] = {}
        for caller in CALLERS:
            r = call(client, method, path, op, headers_of(tokens, caller))
            matrix[op][caller] = r.status_code
            want = expected(LEAST_ROLE[op], caller, reads)
            if want is None:
                assert r.status_code not in (401, 403), (op, caller, r.status_code)
            else:
                assert r.status_code == want, (op, caller, r.status_code)
                if want == 403:
                    assert f"the token '{caller}-1' (role {caller}) may not" in r.json()["detail"]
    print(f"\nroles × routes (reads {reads}): " + "; ".join(
        f"{op} " + "/".join(str(matrix[op][c]) for c in CALLERS) for op in sorted(matrix)))

    entries = client.get("/api/v1/audit", params={"limit": 1000}, headers=admin).json()
    writes = [(m.upper(), p) for m, p, _ in operations if m in ("post", "delete")]
    for method, path in writes:
        url = path.replace("{name}", "nope")
        mine = [e for e in entries if e["method"] == method and e["path"].split("?")[0] == url]
        assert {e["actor"] for e in mine} >= {"-", "viewer-1", "operator-1", "admin"}, (method, url, mine)
        assert {e["status"] for e in mine if e["actor"] == "-"} == {401}
    refused = [e for e in entries if e["status"] == 403]
    assert refused and {e["role"] for e in refused} <= {"viewer", "operator"}


def test_a_token_is_shown_once_stored_hashed_and_stops_working_when_dropped(tmp_path: Path) -> None:
    for client in serve(tmp_path, "open"):
        admin = {"Authorization": f"Bearer {read_token(tmp_path)}"}
        made = client.post("/api/v1/tokens", json={"name": "alice", "role": "operator"}, headers=admin).json()
        assert client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {made['token']}"}).json() == {
            "name": "alice", "role": "operator"}
        listed = client.get("/api/v1/tokens", headers=admin).json()
        assert {t["name"]: t["role"] for t in listed} == {"admin": "admin", "alice": "operator"}
        assert made["token"] not in (tmp_path / "stagewise.db").read_bytes().decode("latin-1")
        again = client.post("/api/v1/tokens", json={"name": "alice", "role": "viewer"}, headers=admin)
        assert again.status_code == 409
        assert client.post("/api/v1/tokens", json={"name": "admin", "role": "viewer"}, headers=admin).status_code == 409
        assert client.delete("/api/v1/tokens/admin", headers=admin).status_code == 409
        assert client.delete("/api/v1/tokens/alice", headers=admin).json()["name"] == "alice"
        assert client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {made['token']}"}).status_code == 401


def test_servers_sharing_a_state_directory_and_started_together_agree_on_one_admin_token(tmp_path: Path) -> None:
    go = tmp_path / "go"
    racer = ("import os, sys, time\n"
             "from pathlib import Path\n"
             "from stagewise.api.server import ensure_token\n"
             "Path(sys.argv[3]).touch()\n"
             "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
             "print(ensure_token(Path(sys.argv[1])))\n")
    procs = [subprocess.Popen([sys.executable, "-c", racer, str(tmp_path / "state"), str(go), str(tmp_path / f"r{n}")],
                              stdout=subprocess.PIPE, text=True) for n in range(8)]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("r*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.01)  # until every racer has imported and waits for the start
    go.touch()
    tokens = {proc.communicate(timeout=30)[0].strip() for proc in procs}
    assert tokens == {read_token(tmp_path / "state")}
    assert (tmp_path / "state" / "token").stat().st_mode & 0o777 == 0o600
