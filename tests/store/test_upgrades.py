"""Rows an older stagewise stored read back after the schema migration that typed specs and judge states, on each
backend (SQLite and PostgreSQL run the same row upgrades at schema version 4).

`legacy/` holds a service record and a delivery exactly as the store wrote them
at schema version 2 (every analysis template with every provider's fields,
judge states and provider notes as loose mappings), in the middle of an
analysis judged by all four judges and a command provider.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stagewise.analysis.judges.runs import judge_runs
from stagewise.core.judge_state import ErrorRateState, LatencyState, MannWhitneyState, ThresholdState
from stagewise.core.spec import (
    CanaryStrategy,
    CommandTemplate,
    HttpTemplate,
    PauseStep,
    PrometheusTemplate,
    RouterTemplate,
    SetWeightStep,
)
from stagewise.core.stats import ReleaseStats, RouterStats
from tests.store.conftest import Backend

pytestmark = pytest.mark.timeout(30)

LEGACY = Path(__file__).parent / "legacy"


def legacy(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((LEGACY / name).read_text())
    return data


def v2_database(backend: Backend, delivery: dict[str, Any], service: dict[str, Any]) -> None:
    backend.migrate(2)
    backend.sql("INSERT INTO services (name, record, created_at, updated_at) VALUES ('shop', ?, 1, 2)",
                (json.dumps(service),))
    backend.sql("INSERT INTO deliveries (service, phase, state, created_at, updated_at)"
                " VALUES ('shop', 'Progressing', ?, 1, 1)", (json.dumps(delivery),))


def test_a_delivery_stored_before_typed_specs_and_judge_states_reads_back_and_goes_on(backend: Backend) -> None:
    delivery, service = legacy("v2_delivery.json"), legacy("v2_service.json")
    states = delivery["analysis"]["step-2"]["judge_state"]
    assert states["smoke@provider"]["evidence"] == {"out": "ok"}
    states["old"] = {**states["latency"], "kind": "sequential/latency/3"}  # a judge that no longer exists
    v2_database(backend, delivery, service)

    store = backend.open()
    try:
        record = store.get_service("shop")
        stored = store.get_delivery(1)
    finally:
        store.close()
    assert backend.schema.SCHEMA_VERSION >= 3
    assert record is not None and stored is not None
    for spec in (record.spec, stored.spec):
        strategy = spec.spec.strategy
        assert isinstance(strategy, CanaryStrategy)
        assert isinstance(strategy.canary.steps[0], SetWeightStep) and isinstance(strategy.canary.steps[4], PauseStep)
        templates = spec.spec.analysis
        assert isinstance(templates["errors"], RouterTemplate)
        assert isinstance(templates["smoke"], CommandTemplate) and templates["smoke"].args == ["true"]
        assert isinstance(templates["probe"], HttpTemplate) and templates["probe"].url == "http://127.0.0.1:1/"
        assert isinstance(templates["promql"], PrometheusTemplate) and templates["promql"].query == "up"

    run = stored.analysis["step-2"]
    assert isinstance(run.judge_state["errors"], ErrorRateState)
    assert isinstance(run.judge_state["latency"], LatencyState)
    assert isinstance(run.judge_state["mw"], MannWhitneyState)
    assert isinstance(run.judge_state["th"], ThresholdState) and isinstance(run.judge_state["smoke"], ThresholdState)
    assert "old" not in run.judge_state and "smoke@provider" not in run.judge_state
    assert run.notes["smoke"].evidence == {"out": "ok"}
    assert run.judge_state["errors"].requests == tuple(states["errors"]["requests"])

    # the judges take up their stored state: the counts go on from where they were
    later = RouterStats(releases={"v1": ReleaseStats(requests=9000, errors=30), "v2": ReleaseStats(requests=3000,
                                                                                                   errors=30)})
    judged = judge_runs(stored, later, 30.0)
    before, after = run.judge_state["errors"], judged.analysis["step-2"].judge_state["errors"]
    assert isinstance(after, ErrorRateState) and after.requests[0] > before.requests[0]


def test_a_migrated_row_is_what_todays_store_would_write(backend: Backend) -> None:
    """After the migration, saving the delivery again writes it in today's shape, and reads it back the same."""
    v2_database(backend, legacy("v2_delivery.json"), legacy("v2_service.json"))
    store = backend.open()
    try:
        stored = store.get_delivery(1)
        assert stored is not None
        store.save_delivery(stored, [])
        assert store.get_delivery(1) == stored
    finally:
        store.close()
