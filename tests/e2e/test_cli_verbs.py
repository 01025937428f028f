"""The CLI's verbs against a real server: the paths a person takes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Stagewise, spec_json

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def cli(sw: Stagewise, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stagewise", *args, "--state", str(sw.state)],
                          capture_output=True, text=True, timeout=90)


def write(sw: Stagewise, version: str, strategy: dict[str, Any], **options: Any) -> Path:
    path = sw.root / f"{version}.yaml"
    path.write_text(spec_json(sw.listen, version, strategy, **options))
    return path


def test_apply_status_promote_abort_retry_undo_history(stagewise: Stagewise) -> None:
    sw = stagewise
    first = cli(sw, "apply", str(write(sw, "v1", {"full": {}})), "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    paused = {"canary": {"steps": [{"setWeight": 40}, {"pause": {}}]}}
    assert cli(sw, "apply", str(write(sw, "v2", paused))).returncode == 0
    sw.wait({"Paused"})
    status = json.loads(cli(sw, "status", "shop", "--json").stdout)
    assert status["phase"] == "Paused" and status["delivery"]["weights"] == {"v1": 60, "v2": 40}
    assert "Paused" in cli(sw, "status", "shop").stdout
    assert cli(sw, "status").returncode == 0
    # a name no spec could give is refused with the rule, in words
    bad_name = cli(sw, "status", "Shop")
    assert bad_name.returncode == 2 and "DNS label" in bad_name.stderr and "Traceback" not in bad_name.stderr
    # a second release while one is in flight is refused, with the reason
    busy = cli(sw, "apply", str(write(sw, "v3", paused)))
    assert busy.returncode == 2 and "promote or abort it first" in busy.stderr
    assert cli(sw, "abort", "shop").returncode == 0
    assert sw.wait()["phase"] == "RolledBack"
    assert cli(sw, "retry", "shop").returncode == 0
    sw.wait({"Paused"})
    assert cli(sw, "pause", "shop").returncode == 0
    assert cli(sw, "resume", "shop").returncode == 0
    assert cli(sw, "promote", "shop").returncode == 0
    assert sw.wait()["phase"] == "Succeeded"
    assert cli(sw, "promote", "shop").returncode == 2, "nothing left to promote"
    assert cli(sw, "undo", "shop").returncode == 0
    sw.wait({"Paused"})
    assert cli(sw, "promote", "shop", "--full").returncode == 0
    final = sw.wait()
    assert final["phase"] == "Succeeded" and final["stable"] == "v1"
    history = json.loads(cli(sw, "history", "shop", "--json").stdout)
    assert [(d["to"], d["phase"], d["undo"]) for d in history] == [
        ("v1", "Succeeded", True), ("v2", "Succeeded", False), ("v1", "Succeeded", False)]
    assert "undo" in cli(sw, "history", "shop").stdout


def test_apply_wait_exits_1_when_the_release_is_rolled_back(stagewise: Stagewise) -> None:
    sw = stagewise
    assert cli(sw, "apply", str(write(sw, "v1", {"full": {}})), "--wait").returncode == 0
    broken = [sys.executable, "-c", "raise SystemExit(3)", "{port}"]
    result = cli(sw, "apply", str(write(sw, "v9", {"full": {}}, command=broken, deadline="3s")), "--wait")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "RolledBack" in result.stdout
