"""A delivery's JSON made with its spec's text kept is the JSON pydantic makes, character for character."""

from __future__ import annotations

import pytest

from stagewise.core.delivery import AnalysisRun, Phase
from stagewise.core.verdict import Outcome, Verdict
from stagewise.store import rows
from stagewise.store.rows import delivery_json
from tests.store.samples import make_delivery, make_spec


def test_a_delivery_json_is_the_whole_dump_whatever_it_holds() -> None:
    first = make_delivery("web", "v2").model_copy(update={"id": 7})
    assert delivery_json(first) == first.model_dump_json()
    moved = first.model_copy(update={
        "phase": Phase.PROGRESSING, "step": 1, "stable": None, "message": '"stable": a quote, a comma',
        "analysis": {"step-1": AnalysisRun(key="step-1", templates=["errors"], started_at=3.0,
                                           verdict=Verdict(outcome=Outcome.RUNNING, message=',"stable":'),
                                           history=[{"t": 3.0, "candidate": {"requests": 2}}])},
    })
    assert delivery_json(moved) == moved.model_dump_json()
    again = moved.model_copy(update={"spec": make_spec("web", "v3")})  # another spec: its own text
    assert delivery_json(again) == again.model_dump_json()
    assert delivery_json(moved) == moved.model_dump_json()


def test_the_kept_texts_start_afresh_past_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows, "SPEC_TEXTS_MAX", 2)
    deliveries = [make_delivery("web", f"v{i}") for i in range(5)]
    for d in deliveries * 2:
        assert delivery_json(d) == d.model_dump_json()
    assert len(rows._spec_texts) <= 2
