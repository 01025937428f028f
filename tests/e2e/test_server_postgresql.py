"""A real server keeping its state in a real PostgreSQL (`--store`): deliveries run, `status` shows them, a server
started again finds them there, and a store it cannot open is refused at start with the reason, password masked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.e2e.conftest import Stagewise, spec_json
from tests.pg import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CANARY = {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}}


@pytest.fixture
def sw() -> Iterator[Stagewise]:
    root = Path(tempfile.mkdtemp(prefix="sw-e2e-", dir="/tmp"))
    server = Stagewise(root)
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def cli(sw: Stagewise, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stagewise", *args, "--state", str(sw.state)],
                          capture_output=True, text=True, timeout=90)


def test_a_server_on_postgresql_runs_deliveries_and_finds_them_after_a_restart(sw: Stagewise, pg_url: str) -> None:
    with_password = pg_url.replace("postgres@", "postgres:hunter2@")  # trust authentication: libpq sends it unused
    sw.start(options=("--store", with_password))
    for version, strategy in (("v1", {"full": {}}), ("v2", CANARY)):
        spec = sw.root / f"{version}.yaml"
        spec.write_text(spec_json(sw.listen, version, strategy))
        applied = cli(sw, "apply", str(spec), "--wait")
        assert applied.returncode == 0, applied.stdout + applied.stderr + sw.log()
    status = json.loads(cli(sw, "status", "shop", "--json").stdout)
    assert (status["phase"], status["stable"]) == ("Succeeded", "v2")

    with psycopg.connect(pg_url) as conn:
        phases = conn.execute("SELECT phase FROM deliveries WHERE service = 'shop' ORDER BY id").fetchall()
        events = conn.execute("SELECT count(*) FROM events WHERE service = 'shop'").fetchone()
    assert phases == [("Succeeded",), ("Succeeded",)] and events is not None and events[0] > 5
    assert not (sw.state / "stagewise.db").exists(), "nothing was kept in SQLite"
    log = sw.log()
    assert "store postgresql://postgres:***@/" in log and "hunter2" not in log

    sw.kill()
    sw.start(options=("--store", with_password))
    history = json.loads(cli(sw, "history", "shop", "--json").stdout)
    assert [(d["to"], d["phase"]) for d in history] == [("v2", "Succeeded"), ("v1", "Succeeded")]
    assert "hunter2" not in sw.log()


def test_a_store_the_server_cannot_open_is_refused_at_start(pg_cluster: Cluster, tmp_path: Path) -> None:
    url = pg_cluster.url("no_such_database").replace("postgres@", "postgres:hunter2@")
    result = subprocess.run([sys.executable, "-m", "stagewise", "server", "--state", str(tmp_path / "state"),
                             "--listen", "127.0.0.1:0", "--store", url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert 'database "no_such_database" does not exist' in result.stderr
    assert "postgres:***@" in result.stderr and "hunter2" not in result.stderr and "Traceback" not in result.stderr
    unknown = subprocess.run([sys.executable, "-m", "stagewise", "server", "--state", str(tmp_path / "state"),
                              "--store", "mysql://db/x"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown store 'mysql://db/x'" in unknown.stderr
