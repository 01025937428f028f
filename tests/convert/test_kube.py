"""Kubernetes' small languages as Argo, Flagger and Kubernetes read them: Go durations, Argo's pause,
`$(VAR)` expansion and its escape, image tags, and success/failure conditions as ranges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stagewise.convert import conditions
from stagewise.convert.kube import argo_pause_seconds, escape, expand, go_duration, image_version, parse_go_duration

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10), ("1h", 3600), ("1m30s", 90), ("1.5h", 5400), ("250ms", 0.25), ("0", 0), ("2h45m", 9900),
    ("1h0m0s", 3600), ("500us", 0.0005), (".5s", 0.5),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "1d", "s", "", "1 h", "h1"])
def test_what_go_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="Go duration"):
        parse_go_duration(text)


@pytest.mark.parametrize(("value", "seconds"), [
    (10, 10), ("10", 10), ("10s", 10), ("1h", 3600), ("1m30s", 90), ("1500ms", 1), ("0", 0), ({}, None),
])
def test_argo_pause_durations_as_argo_reads_them(value: object, seconds: int | None) -> None:
    """`pause: {duration: 10}` is seconds, so is "10"; strings with units are Go's, truncated to seconds."""
    if seconds is None:
        with pytest.raises(ValueError):
            argo_pause_seconds(value)
    else:
        assert argo_pause_seconds(value) == seconds


@given(st.integers(0, 10**6))
def test_go_duration_reads_back(seconds: int) -> None:
    assert parse_go_duration(go_duration(seconds)) == seconds


@pytest.mark.parametrize(("text", "expanded"), [
    ("--port=$(PORT)", "--port={port}"), ("$$(PORT)", "$(PORT)"), ("$$$$", "$$"), ("$HOME", "$HOME"),
    ("$(UNKNOWN)", "$(UNKNOWN)"), ("a$", "a$"), ("$(PORT", "$(PORT"), ("$(PORT)$(PORT)", "{port}{port}"),
])
def test_kubernetes_expansion(text: str, expanded: str) -> None:
    assert expand(text, {"PORT": "{port}"}) == expanded


@given(st.text(alphabet="$()AB{}x", max_size=20))
def test_escape_is_undone_by_expansion(text: str) -> None:
    assert expand(escape(text), {"A": "?"}) == text


@pytest.mark.parametrize(("image", "version"), [
    ("argoproj/rollouts-demo:blue", "blue"), ("ghcr.io/stefanprodan/podinfo:6.0.1", "6.0.1"),
    ("localhost:5000/app", None), ("nginx", None), ("app@sha256:" + "ab" * 32, "abababababab"),
    ("registry:5000/team/app:v2", "v2"),
])
def test_image_versions(image: str, version: str | None) -> None:
    assert image_version(image) == version


@pytest.mark.parametrize(("condition", "low", "high", "strict"), [
    ("result[0] >= 0.95", 0.95, None, False), ("result >= 0.95", 0.95, None, False),
    ("result[0] < 0.5 && result[0] > 0.1", 0.1, 0.5, True), ("0.9 <= result[0]", 0.9, None, False),
    ("asFloat(result) <= 100", None, 100, False),
])
def test_success_conditions_that_are_ranges(condition: str, low: float | None, high: float | None,
                                            strict: bool) -> None:
    assert conditions.success_range(condition) == conditions.Range(low, high, strict)


@pytest.mark.parametrize("condition", ["len(result) == 0 || result[0] >= 0.95", "result[0] >= result[1]",
                                       "isNaN(result)", "result[0] == 1"])
def test_conditions_that_are_no_range(condition: str) -> None:
    assert conditions.success_range(condition) is None


def test_a_failure_condition_is_the_complement() -> None:
    assert conditions.failure_range("result[0] > 0.05") == conditions.Range(max=0.05)
    assert conditions.failure_range("result[0] < 0.9 && result[1] > 2") is None


@given(st.none() | st.floats(-1e6, 1e6), st.none() | st.floats(-1e6, 1e6))
def test_a_written_condition_reads_back(low: float | None, high: float | None) -> None:
    text = conditions.success_condition(low, high)
    if low is None and high is None:
        assert text == "true"
    else:
        assert conditions.success_range(text) == conditions.Range(low, high)
