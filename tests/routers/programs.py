"""The real balancers the router tests start, and what a test does when one is missing.

A test that needs HAProxy, nginx or wrk and does not find it fails in CI
(`CI=true`: `scripts/test` installs them from `scripts/system-packages`, so a
missing one is a broken install step, not a reason to pass) and is skipped on a
developer's machine without them.
"""

from __future__ import annotations

import os
import shutil

import pytest

PACKAGES = {"haproxy": "haproxy", "nginx": "nginx-light", "wrk": "wrk"}
ROUTER_PROGRAMS = {"builtin": None, "haproxy": "haproxy", "nginx": "nginx"}


def find(program: str) -> str | None:
    return shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/sbin/{program}") if os.access(p, os.X_OK)), None)


def need(program: str | None) -> None:
    """Fail (in CI) or skip (elsewhere) unless `program` is installed."""
    if program is None or find(program) is not None:
        return
    why = f"{program} is not installed (apt-get install {PACKAGES.get(program, program)})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why + ": scripts/test should have installed it")
    pytest.skip(why)


def need_router(kind: str) -> None:
    need(ROUTER_PROGRAMS[kind])
