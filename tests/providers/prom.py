"""A real Prometheus (Debian's `prometheus` package) on a loopback port, for the tests that need one.

The test starts it with a config of its own and its storage in a temporary
folder, and stops it at the end. Where the binary is missing the test skips —
except under CI (CI=true), where a missing Prometheus fails: CI installs it
through scripts/system-packages, and a test that silently skips there proves
nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from stagewise.analysis.providers.prometheus import SETTLE
from stagewise.basics import waiting
from stagewise.basics.ports import free_port

SCRAPE_INTERVAL = "1s"


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)
    if found is None:
        message = "prometheus is not installed (Debian package `prometheus`, listed in scripts/system-packages)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextmanager
def running_prometheus(folder: Path, targets: list[str], *, timeout: float = 30.0,
                       address: str | None = None) -> Iterator[str]:
    """A Prometheus scraping `targets` (host:port, path /metrics) every second; yields its base URL.

    `address`: where it listens (default a free loopback port); a restart keeps its storage in `folder`.
    """
    binary = prometheus_binary()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    listed = ", ".join(f'"{t}"' for t in targets)
    config.write_text(
        f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n"
        f"scrape_configs:\n  - job_name: stagewise\n    static_configs:\n      - targets: [{listed}]\n"
    )
    address = address or f"127.0.0.1:{free_port()}"
    with open(folder / "prometheus.log", "ab") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address={address}", "--storage.tsdb.retention.time=1h"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://{address}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, "prometheus exited:\n" + (folder / "prometheus.log").read_text()[-3000:]
            try:
                return httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        assert waiting.blocking_until(ready, timeout=timeout, interval=0.1), \
            "prometheus not ready:\n" + (folder / "prometheus.log").read_text()[-3000:]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for_series(url: str, promql: str, *, timeout: float = 20.0) -> None:
    """Until `promql` returns a sample as of a few seconds ago: scrapes have landed where the provider reads.

    The provider evaluates a few seconds in the past (prometheus.SETTLE), so a sample of now is not enough.
    """
    def sampled() -> bool:
        at = time.time() - SETTLE - 1.0
        body = httpx.get(f"{url}/api/v1/query", params={"query": promql, "time": f"{at:.3f}"}, timeout=2.0).json()
        return bool(body.get("status") == "success" and body["data"]["result"])

    if not waiting.blocking_until(sampled, timeout=timeout, interval=0.2):
        raise AssertionError(f"no samples for {promql} after {timeout}s")
