"""What the judges make by hand on every look is what the slower general way makes: a verdict as JSON-ready
data (pydantic's JSON mode), a histogram's quantiles (`ReleaseStats.quantile_ms`)."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from stagewise.analysis.judges import judge
from stagewise.analysis.judges.sequential_latency import QUANTILES, _quantiles
from stagewise.core.spec import RouterTemplate
from stagewise.core.stats import ReleaseStats, RouterStats, bucket_of
from stagewise.core.verdict import Outcome, Verdict, as_json, combine

PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | st.sampled_from(Outcome),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=5), PLAIN, max_size=4), st.sampled_from(Outcome))
def test_any_plain_evidence_comes_out_as_pydantic_dumps_it(evidence: dict[str, object], outcome: Outcome) -> None:
    verdict = Verdict(outcome=outcome, message="m", evidence=evidence)
    assert as_json(verdict) == verdict.model_dump(mode="json")


def test_evidence_that_is_not_plain_is_left_to_pydantic() -> None:
    verdict = Verdict(outcome=Outcome.RUNNING, evidence={"stats": RouterStats(boot="b"), "keys": {1: "one"}})
    assert as_json(verdict) == verdict.model_dump(mode="json")


def test_the_judges_verdicts_combine_as_their_pydantic_dumps_would() -> None:
    rng = random.Random(7)
    states: dict[str, object] = {}
    for look in range(1, 60):
        verdicts = []
        for name, metric in (("errors", "error-rate"), ("latency", "latency")):
            template = RouterTemplate(metric=metric)
            arms = []
            for _ in range(2):
                n = rng.randint(0, 40)
                buckets = [0] * 61
                for _ in range(n):
                    buckets[bucket_of(rng.uniform(1, 300))] += 1
                arms.append(ReleaseStats(requests=n, errors=rng.randint(0, n // 4), latency_buckets=buckets))
            state, verdict = judge(template, states.get(name), arms[0], arms[1],  # type: ignore[arg-type]
                                   elapsed=look * 0.25, duration=10.0)
            states[name] = state
            verdicts.append(verdict)
        combined = combine(verdicts)
        assert combined.evidence["metrics"] == [v.model_dump(mode="json") for v in verdicts]


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=61).map(lambda h: h + [0] * (61 - len(h))))
def test_the_latency_judges_quantiles_are_the_histograms(hist: list[int]) -> None:
    stats = ReleaseStats(latency_buckets=hist)
    expected = {name: (v if math.isfinite(v := stats.quantile_ms(q)) else None) for name, q in QUANTILES}
    assert _quantiles(hist) == expected
    assert list(_quantiles(hist)) == [name for name, _ in QUANTILES]
