"""How the suite is shared among xdist workers (`pytest -n N --dist loadgroup`, as scripts/test runs it).

A few files hold most of the suite's time in tests that each start their own
servers and deliveries (a SIGKILL at every step, a takeover at every step,
every strategy through every router). Sent as one unit each (`--dist
loadfile`), such a file runs on one worker from start to end while the others
run out of work. So with `--dist loadgroup` the units are these groups:

- the tests of one file, so that whatever they share (module-scoped fixtures:
  a fleet of hosts, a built wheel, an event loop) is set up once, on one
  worker, as with `--dist loadfile`;
- except for the files in `SPLIT`, whose tests share nothing but the worker's
  PostgreSQL (session-scoped, one per worker anyway): each of their tests is a
  unit of its own that any worker may take (checked at collection);
- handed out longest first (`COST`), so that the long ones start early and the
  short ones fill the workers' ends.

The groups come from the node ids, in the scheduler (`pytest_xdist_make_scheduler`),
not from `xdist_group` marks: xdist 3.8 passes those on by rewriting node ids,
which pytest 9.2 no longer lets it do. The order is the collection's, sorted on
the workers. A run without `--dist loadgroup` is left as it is. This module
never changes which tests run or what they do: only where, and in which order.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

SPLIT = frozenset({
    "tests/e2e/test_crash.py",
    "tests/e2e/test_controllers.py",
    "tests/e2e/test_strategies.py",
})
"""Files whose tests are long and independent of each other: one group per test."""

COST = {
    "tests/e2e/test_controllers.py": 194,
    "tests/e2e/test_strategies.py": 185,
    "tests/e2e/test_crash.py": 143,
    "tests/fleet/test_strategies.py": 78,
    "tests/packaging/test_wheel.py": 60,
    "tests/fleet/test_releases.py": 57,
    "tests/fleet/test_hosts.py": 49,
    "tests/fleet/test_crash.py": 41,
    "tests/e2e/test_prometheus.py": 38,
    "tests/e2e/test_pipeline_e2e.py": 37,
    "tests/e2e/test_browser.py": 37,
    "tests/convert/test_fuzz.py": 34,
    "tests/providers/test_prometheus_metrics.py": 33,
    "tests/e2e/test_server_postgresql.py": 33,
    "tests/e2e/test_cli_verbs.py": 32,
    "tests/routers/test_zero_drop.py": 29,
    "tests/e2e/test_delete.py": 28,
    "tests/convert/test_roundtrip.py": 26,
    "tests/e2e/test_gates_e2e.py": 26,
    "tests/api/test_schemathesis.py": 24,
    "tests/cli/test_completion.py": 23,
    "tests/routers/test_request_parsing.py": 23,
    "tests/e2e/test_descriptors.py": 18,
    "tests/e2e/test_people_cli.py": 18,
    "tests/convert/test_e2e.py": 17,
    "tests/cli/test_cli.py": 17,
    "tests/e2e/test_restart_default_port.py": 16,
    "tests/e2e/test_nodata.py": 16,
    "tests/controller/test_deliveries.py": 15,
    "tests/e2e/test_controller_metrics.py": 13,
    "tests/gates/test_controller_gates.py": 11,
    "tests/convert/test_cli.py": 11,
    "tests/analysis/test_value_judge.py": 10,
    "tests/dashboard/test_pages.py": 10,
    "tests/providers/test_providers.py": 10,
    "tests/api/test_input_bounds.py": 9,
    "tests/analysis/test_replay.py": 8,
    "tests/e2e/test_sim_vs_real.py": 8,
}
"""Seconds a file's tests take together with four workers on two cores (`pytest --durations=0`, summed per file);
a test of a file in `SPLIT` is counted at the file's mean. Only the order they give matters; a file not named here
is short and comes after these, in the order it was collected."""

SHARED_SCOPES = frozenset({"package", "module", "class"})


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def group_of(nodeid: str) -> str:
    """The unit a test is scheduled in: its file, or itself when its file is in SPLIT."""
    path = file_of(nodeid)
    return nodeid if path in SPLIT else path


def _grouped(config: pytest.Config) -> bool:
    """Whether this run schedules by `group_of`: `--dist loadgroup` (an xdist worker is told `loadgroup`, its own
    `dist` being "no")."""
    return bool(getattr(config.option, "loadgroup", False)) or getattr(config.option, "dist", "no") == "loadgroup"


def _check_shares_nothing(item: pytest.Item) -> None:
    fixtures = item._fixtureinfo.name2fixturedefs if isinstance(item, pytest.Function) else {}
    shared = sorted(name for name, defs in fixtures.items() if defs[-1].scope in SHARED_SCOPES)
    if shared:
        raise pytest.UsageError(f"{item.nodeid} is scheduled on its own (tests/scheduling.py: SPLIT), but it shares "
                                f"fixtures with the other tests of its file: {', '.join(shared)}")


@pytest.hookimpl(trylast=True)  # the order the other plugins leave, sorted by group
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _grouped(config):
        return
    tests_in = Counter(file_of(item.nodeid) for item in items)
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        if file_of(item.nodeid) in SPLIT:
            _check_shares_nothing(item)
        first.setdefault(group_of(item.nodeid), index)

    def order(item: pytest.Item) -> tuple[float, int]:
        path, group = file_of(item.nodeid), group_of(item.nodeid)
        seconds = COST.get(path, 0.0) / (tests_in[path] if path in SPLIT else 1)
        return -seconds, first[group]

    items.sort(key=order)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown to a run without xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if getattr(config.option, "dist", "no") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        """xdist's scheduling by scope (whole units to one worker, more as it runs out), the units being
        `group_of`'s, in the order the workers collected them."""

        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    config.option.loadscopereorder = False  # not by number of tests: the collection is already longest first
    return ByGroup(config, log)
