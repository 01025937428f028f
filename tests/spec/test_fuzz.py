"""Whatever the input, the loader answers with a spec or a SpecError — never another exception.

The property covers three kinds of input: text built from YAML's own punctuation
(where parser corner cases live), well-formed YAML dumped from random nested data
shaped like a spec (where validation and error mapping live), and raw bytes
(where decoding lives).
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from stagewise.core.spec import ServiceSpec
from stagewise.errors import SpecError
from stagewise.spec import load_spec_text

pytestmark = pytest.mark.timeout(60)

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

YAML_PUNCTUATION = [
    *":-?[]{},&*!|>'\"#%@`~ \t\n\r", "---", "...", "<<", "!!", "%YAML 1.", "\ufeff", "\x00", "é", "0x",
]
FIELD_NAMES = [
    "apiVersion", "kind", "metadata", "name", "spec", "listen", "release", "version", "run", "command",
    "strategy", "canary", "steps", "setWeight", "pause", "duration", "analysis", "templates", "phased",
    "waves", "cohorts", "key", "header", "blueGreen", "full", "replicas", "startingStep", "env", "errors",
]


def assert_spec_or_spec_error(text: str | bytes) -> None:
    try:
        result = load_spec_text(text, "fuzz.yaml")
    except SpecError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.line >= 1 and problem.column >= 1 and problem.message
            assert problem.file == "fuzz.yaml"
    else:
        assert isinstance(result, ServiceSpec)


@FUZZ
@given(st.lists(st.sampled_from(YAML_PUNCTUATION) | st.text(max_size=6), max_size=60).map("".join))
def test_yaml_ish_text(text: str) -> None:
    assert_spec_or_spec_error(text)


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(
    ["stagewise.dev/v1alpha1", "Service", "127.0.0.1:8080", "30s", "25%", "{port}", "v2", "router"]
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
nested = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)
spec_shaped = st.fixed_dictionaries(
    {"apiVersion": st.just("stagewise.dev/v1alpha1"), "kind": st.just("Service"),
     "metadata": st.fixed_dictionaries({"name": st.sampled_from(["web", "Web", ""])}),
     "spec": st.dictionaries(keys, nested, max_size=6)}
)


def dump(data: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue()


@FUZZ
@given(nested | spec_shaped)
def test_random_structures_dumped_as_yaml(data: Any) -> None:
    assert_spec_or_spec_error(dump(data))


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(raw: bytes) -> None:
    assert_spec_or_spec_error(raw)
