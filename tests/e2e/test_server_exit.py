"""`stagewise server` leaves no server.json behind when it stops cleanly, and the CLI says so when one is stale.

The CLI finds the server through `server.json` in the state directory. A
server stopped with SIGTERM (a supervisor, `kill`) or SIGINT (Ctrl-C) must
remove it; one killed with SIGKILL cannot, and the CLI must then say that the
server named there no longer runs — not only that an address does not answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.e2e.conftest import Stagewise

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_server_stopped_by_a_signal_removes_its_server_file(stagewise: Stagewise, sig: signal.Signals) -> None:
    server_file = stagewise.state / "server.json"
    assert server_file.exists()
    assert stagewise.proc is not None
    os.kill(stagewise.proc.pid, sig)
    code = stagewise.proc.wait(20)
    assert not server_file.exists(), f"server.json outlived a server stopped by {sig.name}:\n{stagewise.log()}"
    if sig is signal.SIGTERM:
        assert code == -signal.SIGTERM, "it still ends by SIGTERM, as a supervisor expects"
    assert "stagewise server stopped" in stagewise.log()


def test_the_cli_names_a_killed_server_that_left_its_server_file(stagewise: Stagewise) -> None:
    info = json.loads((stagewise.state / "server.json").read_text())
    stagewise.kill()
    assert (stagewise.state / "server.json").exists(), "SIGKILL leaves no chance to clean up"
    result = subprocess.run([sys.executable, "-m", "stagewise", "status", "--state", str(stagewise.state)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3, result.stderr
    said = " ".join(result.stderr.split())
    assert f"pid {info['pid']}" in said and "no longer runs" in said, said
    assert f"stagewise server --state {stagewise.state}" in said, said
