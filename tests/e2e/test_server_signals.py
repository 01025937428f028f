"""A real `stagewise server` re-reads its settings file on SIGHUP, and logs one JSON object per line.

The server runs with `--settings FILE`; the test rewrites the file and sends
SIGHUP, as `systemctl reload` does, and sees the new settings in force: the
reconcile interval in the server's own metrics, the log switched to JSON at
debug level. A delivery then shows up in the log with its service and
delivery. A file made invalid is refused with its file:line:column and
changes nothing; the server serves on all along.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stagewise.basics import waiting
from tests.e2e.conftest import SERVICE, Stagewise

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def interval(sw: Stagewise) -> float:
    assert sw.client is not None
    text = httpx.get(f"{sw.client.url}/metrics", timeout=5).text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "stagewise_reconcile_interval_seconds"]
    return samples[0].value


def wait_for_interval(sw: Stagewise, seconds: float) -> None:
    assert waiting.blocking_until(lambda: interval(sw) == seconds, timeout=10), (
        f"the interval is still {interval(sw)}, not {seconds}:\n{sw.log()}")


def log_lines(sw: Stagewise) -> list[str]:
    return (sw.root / f"server-{sw.starts}.log").read_text().splitlines()


def json_records_after(sw: Stagewise, marker: str) -> list[dict[str, Any]]:
    """Every line after the first holding `marker`, each of which must be one JSON object."""
    lines = log_lines(sw)
    start = next(i for i, line in enumerate(lines) if marker in line)
    records = []
    for line in lines[start:]:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not one JSON object: {line!r}") from None
    return records


def wait_for_record(sw: Stagewise, marker: str, predicate: Any) -> dict[str, Any]:
    found = waiting.blocking_until(lambda: [r for r in json_records_after(sw, marker) if predicate(r)], timeout=15,
                                   interval=0.1)
    assert found, "no such log record:\n" + "\n".join(log_lines(sw)[-30:])
    return found[0]


def test_sighup_rereads_the_settings_file_and_a_bad_one_changes_nothing(stagewise: Stagewise, tmp_path: Path) -> None:
    settings = tmp_path / "server.toml"
    settings.write_text('log-format = "text"\ntick = "250ms"\n')
    stagewise.stop()
    stagewise.start(options=("--settings", str(settings)))
    assert stagewise.proc is not None
    assert interval(stagewise) == 0.25
    assert "stagewise server on http://" in log_lines(stagewise)[0]  # text: as a person reads it

    settings.write_text('log-format = "json"\nlog-level = "debug"\ntick = "100ms"\n')
    os.kill(stagewise.proc.pid, signal.SIGHUP)
    wait_for_interval(stagewise, 0.1)
    reread = wait_for_record(stagewise, "SIGHUP", lambda r: r["message"].startswith("SIGHUP: settings read again"))
    assert reread["level"] == "info" and reread["logger"] == "stagewise.server"
    assert reread["changed"] == ["log-format", "log-level", "tick"], reread
    assert "tick 0.25 → 0.1" in reread["message"]

    stagewise.apply("v1", {"full": {}}, replicas=1)
    assert stagewise.wait()["phase"] == "Succeeded"
    done = wait_for_record(stagewise, "SIGHUP", lambda r: r.get("kind") == "phase" and "Succeeded" in r["message"])
    assert done["service"] == SERVICE and isinstance(done["delivery"], int) and done["logger"] == "stagewise.events"
    assert done["phase"] == "Succeeded" and done["message"] == f"{SERVICE}: Succeeded: v1 is stable"

    settings.write_text('tick = "fast"\n')
    os.kill(stagewise.proc.pid, signal.SIGHUP)
    refused = wait_for_record(stagewise, "SIGHUP", lambda r: r["level"] == "error")
    assert f"{settings}:1:1: tick: expected a duration" in refused["message"], refused
    assert "the settings in force stay" in refused["message"]
    assert interval(stagewise) == 0.1 and stagewise.proc.poll() is None
    assert stagewise.status()["phase"] == "Succeeded"


def test_the_command_line_fixes_a_setting_that_sighup_does_not_change(stagewise: Stagewise, tmp_path: Path) -> None:
    settings = tmp_path / "server.toml"
    settings.write_text('tick = "200ms"\n')
    stagewise.stop()
    stagewise.start(options=("--settings", str(settings), "--log-format", "json", "--tick", "300ms"))
    assert stagewise.proc is not None
    assert interval(stagewise) == 0.3
    first = json.loads(log_lines(stagewise)[0])
    assert first["message"].startswith("stagewise server on http://") and first["pid"] == stagewise.proc.pid
    settings.write_text('tick = "150ms"\nlog-format = "text"\n')
    os.kill(stagewise.proc.pid, signal.SIGHUP)
    said = wait_for_record(stagewise, "stagewise server on", lambda r: r["message"].startswith("SIGHUP"))
    assert said["message"] == "SIGHUP: settings read again: nothing changed", said
    assert interval(stagewise) == 0.3
