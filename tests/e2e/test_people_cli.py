"""Tokens and approvals through the command line of a real server: who approved is the token's name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.e2e.conftest import SERVICE, Stagewise, spec_json

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def cli(sw: Stagewise, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STAGEWISE_TOKEN"}
    if token is not None:
        env["STAGEWISE_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "stagewise", *args, "--state", str(sw.state)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_token_create_prints_the_token_last_and_approvals_carry_its_name(stagewise: Stagewise) -> None:
    sw = stagewise
    made = cli(sw, "token", "create", "alice", "--role", "operator")
    assert made.returncode == 0, made.stderr
    alice = made.stdout.strip().splitlines()[-1]
    assert len(alice) >= 40 and " " not in alice, "the token alone on the last line"
    viewer = cli(sw, "token", "create", "vic", "--role", "viewer").stdout.strip().splitlines()[-1]
    assert "alice" in cli(sw, "token", "list").stdout
    gated: dict[str, Any] = {"canary": {"steps": [{"setWeight": 20}, {"approval": {"approvers": ["alice"]}}]}}
    for version, strategy in (("v1", {"full": {}}), ("v2", gated)):
        path = sw.root / f"{version}.yaml"
        path.write_text(spec_json(sw.listen, version, strategy))
        assert cli(sw, "apply", str(path)).returncode == 0
        if version == "v1":
            sw.wait()
    sw.wait({"Waiting"})
    assert "approval: 0/1 from alice" in cli(sw, "status", SERVICE).stdout
    refused = cli(sw, "approve", SERVICE, token=viewer)
    assert refused.returncode == 2 and "the token 'vic' (role viewer) may not approve" in refused.stderr
    by_admin = cli(sw, "approve", SERVICE)  # the server's own token: its name is admin, not an approver here
    assert by_admin.returncode == 2 and "admin is not among the approvers (alice)" in by_admin.stderr
    ok = cli(sw, "approve", SERVICE, "--comment", "dashboards look fine", token=alice)
    assert ok.returncode == 0, ok.stderr
    assert sw.wait()["phase"] == "Succeeded"
    status = json.loads(cli(sw, "status", SERVICE, "--json").stdout)
    assert [(a["by"], a["comment"]) for a in status["delivery"]["approvals"]] == [("alice", "dashboards look fine")]
    audit = json.loads(cli(sw, "audit", "--json").stdout)
    route = f"/api/v1/services/{SERVICE}/approve"
    approvals = [(e["actor"], e["status"]) for e in audit if e["path"].startswith(route)]
    assert approvals == [("vic", 403), ("admin", 403), ("alice", 200)]
    assert cli(sw, "token", "delete", "alice").returncode == 0
    assert cli(sw, "status", SERVICE, token=alice).returncode == 0, "reads stay open by default"
    assert cli(sw, "pause", SERVICE, token=alice).returncode == 2, "a dropped token changes nothing"
