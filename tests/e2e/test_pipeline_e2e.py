"""A pipeline staging → production on a real server over the local platform, through the command line.

Both stages run the sample service, named by `{version}` in a launcher's argv (a release's program as a team
would ship it: v3's build cannot start). v2 goes through both stages, soaked and verified by an http probe in
staging; v3 fails in staging and never reaches production. `stagewise status PIPELINE` is printed as a person
sees it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stagewise.examples.load import LoadInBackground
from tests.e2e.conftest import Stagewise, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

LAUNCHER = '''\
import os, sys
version, port = sys.argv[1], sys.argv[2]
if version == "v3":
    sys.exit("v3: missing configuration key PAYMENT_URL")  # the build that cannot start
os.execv(sys.executable, [sys.executable, "-m", "stagewise.examples.sample_service", "--port", port,
                          "--version", version])
'''


def service(name: str, listen: str, launcher: Path) -> dict[str, Any]:
    return {
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": name},
        "spec": {
            "listen": listen, "replicas": 1,
            "release": {"version": "v0", "run": {"command": [sys.executable, str(launcher), "{version}", "{port}"]},
                        "readiness": {"http": "/healthz", "timeout": "5s"}},
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}},
            "analysis": {"probe": {"provider": "http", "url": f"http://{listen}/healthz", "judge": "threshold",
                                   "interval": "1s"}},
            "progressDeadline": "15s",
        },
    }


def cli(sw: Stagewise, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stagewise", *args, "--state", str(sw.state)],
                          capture_output=True, text=True, timeout=120)


def test_a_release_goes_through_staging_and_production_and_a_bad_one_stops_in_staging(
        stagewise: Stagewise, capsys: pytest.CaptureFixture[str]) -> None:
    sw = stagewise
    launcher = sw.root / "launch.py"
    launcher.write_text(LAUNCHER)
    staging, production = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    pipeline = {
        "apiVersion": "stagewise.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "shop"},
        "spec": {"stages": [
            {"name": "staging", "service": service("shop-staging", staging, launcher), "requiredSoak": "3s",
             "verification": {"templates": ["probe"]}},
            {"name": "production", "service": service("shop-prod", production, launcher)},
        ]},
    }
    path = sw.root / "pipeline.yaml"
    path.write_text(json.dumps(pipeline))
    applied = cli(sw, "apply", str(path))
    assert applied.returncode == 0 and "pipeline created: staging → production" in applied.stdout, applied.stderr
    first = cli(sw, "release", "shop", "v1", "--wait", "--timeout", "90")
    assert first.returncode == 0, first.stdout + first.stderr
    # users from here on: the services exist (a first release has no router before it is up)
    loads = [LoadInBackground(f"http://{a}/", connections=1, rate=40, max_seconds=150, max_requests=6000).start()
             for a in (staging, production)]
    try:
        done = cli(sw, "release", "shop", "v2", "--wait", "--timeout", "90")
        assert done.returncode == 0, done.stdout + done.stderr
        bad = cli(sw, "release", "shop", "v3", "--wait", "--timeout", "90")
        status = cli(sw, "status", "shop")
    finally:
        reports = [load.stop() for load in loads]
    assert bad.returncode == 1, bad.stdout + bad.stderr
    with capsys.disabled():
        print("\n$ stagewise status shop\n" + status.stdout)
    assert status.returncode == 0
    data = json.loads(cli(sw, "status", "shop", "--json").stdout)
    v3, v2, v1 = data["releases"]
    assert [v1["phase"], v2["phase"], v3["phase"]] == ["Succeeded", "Succeeded", "Failed"]
    assert [s["status"] for s in v2["stages"]] == ["succeeded", "succeeded"]
    assert [s["status"] for s in v3["stages"]] == ["failed", "stopped"]
    staged = v2["stages"][0]
    assert staged["verification"]["checks"] >= 2 and staged["verification"]["failed"] == 0
    assert v2["stages"][1]["started_at"] >= staged["soak_until"]
    assert "v3 RolledBack on shop-staging" in v3["stages"][0]["message"]
    assert v3["stages"][1]["message"] == "never reached: v3 failed in staging"
    for name, versions in (("shop-staging", ["v3", "v2", "v1"]), ("shop-prod", ["v2", "v1"])):
        history = json.loads(cli(sw, "history", name, "--json").stdout)
        assert [d["to"] for d in history] == versions, (name, history)
    assert sw.client is not None
    assert sw.client.get("/api/v1/services/shop-prod")["stable"] == "v2"
    # `{version}` reached the program: production's users were answered by v2 itself, never by v3
    assert reports[1].by_version.get("v2", 0) > 0 and "v3" not in reports[1].by_version
    assert reports[0].non_2xx == reports[1].non_2xx == 0
    _cleanup(sw, ("shop-staging", "shop-prod"))


def _cleanup(sw: Stagewise, names: tuple[str, ...]) -> None:
    for name in names:
        deleted = cli(sw, "delete", name)
        assert deleted.returncode == 0, deleted.stderr
    time.sleep(0.2)
