"""prometheus: PromQL over Prometheus's HTTP API (`GET /api/v1/query`).

Ways to use it, chosen by the template (each query asked once per release,
{{service}}, {{release}} and {{window}} — the interval, such as `60s` —
filled in):

- `query` with `judge: threshold`: the result — a scalar, or the sum of a
  vector's samples — is the release's value (Flagger's and Argo's way).
- `query` with `metric: value`: a gauge; the release's value is the *mean*
  of the vector's samples (one per instance: a canary with one instance and a
  baseline with four compare like with like). An empty vector is no value.
- `query` and `total` with `metric: error-rate`: two counters per release,
  bad events and all events, for the sequential and mannwhitney judges.
- `query` with `metric: latency`: `_bucket` series of a histogram, by `le`
  in seconds, mapped onto the judges' latency buckets.
- no query: the counters the builtin router exports, per release —
  `stagewise_router_requests_total`, `..._errors_total` and the
  `..._request_duration_seconds` histogram.

Counters the way `increase()` reads them. A counter query should name the
series without aggregating them (`my_errors_total{version="{{release}}"}`,
not `sum(...)`): the provider follows each series by its labels, and a
series whose value falls has restarted from zero (its process restarted), so
its increase is the new value — the same rule as Prometheus's `rate` and
`increase`. Summing first would hide one instance's restart inside the others'
totals. A series is remembered by its labels, so one that vanished while
Prometheus restarted (or a scrape failed) and then returns counts only what it
gained in between. A series seen for the first time brings its whole value: an
instance that starts during the analysis counted from zero since it started
(as the router's own counters do after a restart). The running totals handed
on therefore only grow, and the caller's differences are event counts.

Missing data is never zero. A release whose requests (`total`, the router's
request counter, or the histogram) have no series fails the measurement with
a ProviderError naming the release: the judge gets nothing for that interval,
and a run that never gets data ends in NoData, never in a pass. A bad-event
counter without series is zero (such series often appear only at the first
error).

Both releases are read at one evaluation time (`time=`), a whole second
SETTLE seconds in the past, so their values come from the same scrapes however
long the queries take: a scrape's samples carry the time it started and are
visible only once it is stored, so at "now" a scrape landing between the
baseline's query and the candidate's would be seen by one and not the other.

Prometheus's own errors (a bad query, a timeout) come back as ProviderError
with Prometheus's words in them, never as a number.

A value filled into a query is escaped for where it lands (`fill_promql`):
inside a string literal its quotes and backslashes, and inside a regex
matcher (`=~"..."`, `!~"..."`) first its regex metacharacters — a release
`v1.0` in `server=~"{{release}}:.+"` must not also match the servers of
`v100`. It never inserts a value unescaped into a string.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx

from stagewise.analysis.providers import Measurement, Target, fill, not_mine
from stagewise.core.spec import AnalysisTemplate, PrometheusTemplate
from stagewise.core.stats import LATENCY_BOUNDS_MS, ReleaseStats
from stagewise.errors import ProviderError

TIMEOUT = 10.0
SETTLE = 2.0
"""Seconds between now and the evaluation time: longer than a scrape takes to be stored."""
SELECTOR = 'service="{{service}}",release="{{release}}"'
ROUTER_COUNTERS = {
    "requests": f"stagewise_router_requests_total{{{SELECTOR}}}",
    "errors": f"stagewise_router_errors_total{{{SELECTOR}}}",
    "buckets": f"stagewise_router_request_duration_seconds_bucket{{{SELECTOR}}}",
}
"""What the counts mode asks per release without a query: the builtin router's counters, series by series."""


_LITERAL = re.compile(r"""#[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`""")
"""A PromQL comment, or a string literal: double-quoted, single-quoted (both with backslash escapes) or raw."""
_REGEX_MATCHER = re.compile(r"[=!]~\s*$")
_REGEX_SPECIAL = re.compile(r"[\\.+*?()|\[\]{}^$]")


def fill_promql(query: str, *, target: Target, release: str) -> str:
    """`query` with its placeholders filled in, each value escaped for the PromQL context it lands in."""
    out: list[str] = []
    done = 0
    for literal in _LITERAL.finditer(query):
        out.append(fill(query[done:literal.start()], target=target, release=release))
        text = literal.group()
        if text.startswith("#"):
            out.append(text)
        else:
            regex = _REGEX_MATCHER.search(query, 0, literal.start()) is not None
            escape = _escaper(regex=regex, quote=text[0])
            out.append(text[0] + fill(text[1:-1], target=target, release=release, escape=escape) + text[0])
        done = literal.end()
    out.append(fill(query[done:], target=target, release=release))
    return "".join(out)


def _escaper(*, regex: bool, quote: str) -> Callable[[str], str]:
    """How a value becomes part of a string literal opened by `quote`, one a regex matcher reads or not."""

    def escape(value: str) -> str:
        if regex:
            value = _REGEX_SPECIAL.sub(r"\\\g<0>", value)
        if quote == "`":  # a raw string: no escapes at all (and no backtick in a release's name)
            return value
        return value.replace("\\", "\\\\").replace(quote, "\\" + quote)

    return escape


SeriesKey = tuple[tuple[str, str], ...]
"""A series' labels, sorted."""
TRACKED_QUERIES = 1024
"""Counter queries whose series are followed; the least recently asked is forgotten beyond this."""


class CounterTracker:
    """Reset-corrected running totals per series of each counter query, as `increase()` counts them."""

    def __init__(self) -> None:
        self._series: OrderedDict[str, dict[SeriesKey, tuple[float, float]]] = OrderedDict()

    def totals(self, query_key: str, samples: list[tuple[SeriesKey, float]]) -> dict[SeriesKey, float]:
        """Each series' reset-corrected total after this answer; every series ever seen stays in it."""
        known = self._series.pop(query_key, {})
        for labels, value in samples:
            last, total = known.get(labels, (0.0, 0.0))
            total += value if value < last else value - last
            known[labels] = (value, total)
        self._series[query_key] = known
        while len(self._series) > TRACKED_QUERIES:
            self._series.popitem(last=False)
        return {labels: total for labels, (_, total) in known.items()}


class PrometheusProvider:
    """Implements `Provider` for `provider: prometheus`."""

    def __init__(self) -> None:
        self.tracker = CounterTracker()

    async def measure(self, *, template: AnalysisTemplate, target: Target) -> Measurement:
        if not isinstance(template, PrometheusTemplate):
            raise not_mine("prometheus", template)
        base = template.address.rstrip("/")
        at = evaluation_time(time.time())
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as client:
            if template.gives_values:
                return await self._values(client, template, target, at)
            return await self._counts(client, template, target, at)

    async def _values(self, client: httpx.AsyncClient, template: PrometheusTemplate, target: Target,
                      at: float) -> Measurement:
        """One value per release: the sum of the samples (threshold) or their mean (metric value)."""
        assert template.query is not None  # gives_values
        values: list[float | None] = []
        asked = {}
        for release in (target.baseline, target.candidate):
            promql = fill_promql(template.query, target=target, release=release)
            asked[release] = promql
            data = await query(client, promql, at=at)
            values.append(_mean(data) if template.metric == "value" else _value(data))
        return Measurement(values=(values[0], values[1]),
                           evidence={"provider": "prometheus", "queries": asked, "values": values, "time": at})

    async def _counts(self, client: httpx.AsyncClient, template: PrometheusTemplate, target: Target,
                      at: float) -> Measurement:
        """Running totals per release of the counter queries, reset-corrected series by series."""
        parts = counter_queries(template)
        answers: dict[str, dict[str, list[tuple[SeriesKey, float]]]] = {}
        for release in (target.baseline, target.candidate):
            asked = {name: fill_promql(q, target=target, release=release) for name, q in parts.items()}
            answers[release] = {name: _samples(await query(client, promql, at=at)) for name, promql in asked.items()}
            _require_requests(answers[release], release, asked)
        counts = [self._release_counts(template.address, parts, answers[r], target, r)
                  for r in (target.baseline, target.candidate)]
        return Measurement(counts=(counts[0], counts[1]),
                           evidence={"provider": "prometheus", "address": template.address, "time": at,
                                     "queries": parts})

    def _release_counts(self, address: str, parts: dict[str, str], answer: dict[str, list[tuple[SeriesKey, float]]],
                        target: Target, release: str) -> ReleaseStats:
        totals = {name: self.tracker.totals(f"{address}\n{release}\n{target.service}\n{parts[name]}", samples)
                  for name, samples in answer.items()}
        buckets = _buckets(totals["buckets"]) if "buckets" in totals else []
        requests = math.fsum(totals["requests"].values()) if "requests" in totals else float(sum(buckets))
        errors = math.fsum(totals["errors"].values()) if "errors" in totals else 0.0
        return ReleaseStats(requests=round(requests), errors=round(errors), latency_buckets=buckets)


def evaluation_time(now: float) -> float:
    """The instant both releases are read at: a whole second, SETTLE seconds ago (see the module's notes)."""
    return float(math.floor(now - SETTLE))


def counter_queries(template: PrometheusTemplate) -> dict[str, str]:
    """The counter queries of a counts-mode template, by part: requests, errors, buckets."""
    if template.query is None:
        return dict(ROUTER_COUNTERS)
    if template.metric == "latency":
        return {"buckets": template.query}
    assert template.total is not None  # validated: error-rate counters come with their total
    return {"requests": template.total, "errors": template.query}


def _require_requests(answer: dict[str, list[tuple[SeriesKey, float]]], release: str, asked: dict[str, str]) -> None:
    """Missing data is no data: a release without series of all requests fails the measurement."""
    part = "requests" if "requests" in answer else "buckets"
    if not answer[part]:
        raise ProviderError(f"prometheus has no series for release {release} of {asked[part]!r}: no data "
                            "(is the release scraped, and are its labels the ones the query names?)")


async def query(client: httpx.AsyncClient, promql: str, *, at: float | None = None) -> dict[str, Any]:
    """The `data` of an instant query (at `at`, seconds since the epoch); ProviderError with Prometheus's own
    message when it fails."""
    params: dict[str, str] = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    try:
        response = await client.get("/api/v1/query", params=params)
    except httpx.HTTPError as exc:
        raise ProviderError(f"prometheus at {client.base_url} did not answer: {exc!r}") from exc
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderError(
            f"prometheus at {client.base_url} answered {response.status_code} without JSON: {response.text[:200]!r}"
        ) from exc
    if not isinstance(body, dict) or body.get("status") != "success":
        kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
        why = body.get("error", response.text[:200]) if isinstance(body, dict) else response.text[:200]
        raise ProviderError(f"prometheus rejected {promql!r}: {kind}: {why}", delay=30.0)
    data: dict[str, Any] = body["data"]
    return data


def _number(sample: Any) -> float:
    try:
        return float(sample[1])
    except (TypeError, ValueError, IndexError) as exc:
        raise ProviderError(f"prometheus returned a sample that is not a number: {sample!r}") from exc


def _vector(data: dict[str, Any]) -> list[dict[str, Any]]:
    result = data.get("result")
    if data.get("resultType") != "vector" or not isinstance(result, list):
        raise ProviderError(f"prometheus returned a {data.get('resultType')}; the query must give an instant vector")
    return result


def _value(data: dict[str, Any]) -> float | None:
    """A scalar, or the sum of a vector's samples; None for an empty vector or NaN."""
    if data.get("resultType") == "scalar":
        value = _number(data.get("result"))
    else:
        result = _vector(data)
        if not result:
            return None
        value = math.fsum(_number(s.get("value")) for s in result)
    return value if math.isfinite(value) else None


def _mean(data: dict[str, Any]) -> float | None:
    """The mean of a vector's finite samples (one per instance), or a scalar; None when there is none."""
    if data.get("resultType") == "scalar":
        return _value(data)
    finite = [v for v in (_number(s.get("value")) for s in _vector(data)) if math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else None


def _samples(data: dict[str, Any]) -> list[tuple[SeriesKey, float]]:
    """A counter query's series: labels and value (NaN samples left out)."""
    out = []
    for sample in _vector(data):
        value = _number(sample.get("value"))
        if math.isfinite(value):
            out.append((tuple(sorted((sample.get("metric") or {}).items())), value))
    return out


def _buckets(totals: dict[SeriesKey, float]) -> list[int]:
    """Per-series totals of `_bucket` series (cumulative by `le`, in seconds) as the judges' latency buckets."""
    by_le: dict[float, float] = {}
    for labels, total in totals.items():
        le = dict(labels).get("le")
        if le is None:
            raise ProviderError("a latency query must give histogram `_bucket` series with an `le` label")
        bound = math.inf if le == "+Inf" else float(le) * 1000
        by_le[bound] = by_le.get(bound, 0.0) + total
    buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    previous = 0.0
    for bound, count in sorted(by_le.items()):
        index = len(LATENCY_BOUNDS_MS) if math.isinf(bound) else _nearest(bound)
        buckets[index] += max(0, round(count - previous))
        previous = max(previous, count)
    return buckets


def _nearest(bound_ms: float) -> int:
    return min(range(len(LATENCY_BOUNDS_MS)), key=lambda i: abs(LATENCY_BOUNDS_MS[i] - bound_ms))
