"""A delivery's JSON made with the texts of its spec and past analyses kept is the JSON pydantic makes."""

from __future__ import annotations

import json

import pytest

from stagewise.core.delivery import AnalysisRun, Delivery, Phase
from stagewise.core.verdict import Outcome, Verdict
from stagewise.store import rows
from stagewise.store.rows import delivery_json
from tests.store.samples import make_delivery, make_spec


def same(d: Delivery) -> bool:
    """`delivery_json` says what the whole dump says, and reads back as the same delivery."""
    text = delivery_json(d)
    return json.loads(text) == json.loads(d.model_dump_json()) and Delivery.model_validate_json(text) == d


def test_a_delivery_json_is_the_whole_dump_whatever_it_holds() -> None:
    first = make_delivery("web", "v2").model_copy(update={"id": 7})
    assert same(first)
    run = AnalysisRun(key="step-1", templates=["errors"], started_at=3.0,
                      verdict=Verdict(outcome=Outcome.RUNNING, message=',"stable":}'),
                      history=[{"t": 3.0, "candidate": {"requests": 2}}])
    moved = first.model_copy(update={
        "phase": Phase.PROGRESSING, "step": 1, "stable": None, "message": '"stable": a quote, a comma}',
        "analysis": {"step-1": run}})
    assert same(moved)
    ended = moved.model_copy(update={"analysis": {}, "past_analysis": [run]})
    assert same(ended)
    again = ended.model_copy(update={"spec": make_spec("web", "v3")})  # another spec: its own text
    assert same(again)
    more = again.model_copy(update={"past_analysis": [*again.past_analysis, run.model_copy(update={"key": "step-3"})]})
    assert same(more) and same(ended)  # another list of past runs: its own text, and the first one's kept


def test_the_kept_texts_start_afresh_past_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows, "TEXTS_MAX", 2)
    run = AnalysisRun(key="step-1", templates=["errors"], started_at=3.0)
    deliveries = [make_delivery("web", f"v{i}").model_copy(update={"past_analysis": [run]}) for i in range(5)]
    for d in deliveries * 2:
        assert same(d)
    assert len(rows._spec_texts) <= 2 and len(rows._past_texts) <= 2
