"""What the judges make by hand on every look is what the slower general way makes: a histogram's quantiles
(`ReleaseStats.quantile_ms`)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from stagewise.analysis.judges.sequential_latency import QUANTILES, _quantiles
from stagewise.core.stats import ReleaseStats


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=61).map(lambda h: h + [0] * (61 - len(h))))
def test_the_latency_judges_quantiles_are_the_histograms(hist: list[int]) -> None:
    stats = ReleaseStats(latency_buckets=hist)
    expected = {name: (v if math.isfinite(v := stats.quantile_ms(q)) else None) for name, q in QUANTILES}
    assert _quantiles(hist) == expected
    assert list(_quantiles(hist)) == [name for name, _ in QUANTILES]
