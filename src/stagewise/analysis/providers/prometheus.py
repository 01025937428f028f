"""prometheus: PromQL over Prometheus's HTTP API (`GET /api/v1/query`).

Two ways to use it, chosen by the template:

- with `query`: one instant query per release, {{service}}, {{release}} and
  {{window}} (the interval, such as `60s`) filled in; the result — a scalar,
  or the sum of a vector's samples — is the release's value, for the
  threshold judge (Flagger's and Argo's way). An empty vector is "no data".
- without: the counters the builtin router exports, per release —
  `stagewise_router_requests_total`, `..._errors_total` and the
  `..._request_duration_seconds` histogram — so that the sequential and
  mannwhitney judges test Prometheus's numbers as they test the router's.

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
from collections.abc import Callable
from typing import Any

import httpx

from stagewise.analysis.providers import Measurement, Target, fill, not_mine
from stagewise.core.spec import AnalysisTemplate, PrometheusTemplate
from stagewise.core.stats import LATENCY_BOUNDS_MS, ReleaseStats
from stagewise.errors import ProviderError

TIMEOUT = 10.0
SELECTOR = 'service="{{service}}",release="{{release}}"'
COUNTER_QUERIES = {
    "requests": f"sum(stagewise_router_requests_total{{{SELECTOR}}})",
    "errors": f"sum(stagewise_router_errors_total{{{SELECTOR}}})",
    "buckets": f"sum by (le) (stagewise_router_request_duration_seconds_bucket{{{SELECTOR}}})",
}
"""What the counts mode asks, per release."""


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


class PrometheusProvider:
    """Implements `Provider` for `provider: prometheus`."""

    async def measure(self, *, template: AnalysisTemplate, target: Target) -> Measurement:
        if not isinstance(template, PrometheusTemplate):
            raise not_mine("prometheus", template)
        base = template.address.rstrip("/")
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as client:
            if template.query:
                values = []
                asked = {}
                for release in (target.baseline, target.candidate):
                    promql = fill_promql(template.query, target=target, release=release)
                    asked[release] = promql
                    values.append(_value(await query(client, promql)))
                return Measurement(values=(values[0], values[1]),
                                   evidence={"provider": "prometheus", "queries": asked, "values": values})
            counts = []
            for release in (target.baseline, target.candidate):
                answers = {name: await query(client, fill_promql(q, target=target, release=release))
                           for name, q in COUNTER_QUERIES.items()}
                counts.append(_counts(answers))
        return Measurement(counts=(counts[0], counts[1]), evidence={"provider": "prometheus", "address": base})


async def query(client: httpx.AsyncClient, promql: str) -> dict[str, Any]:
    """The `data` of an instant query; ProviderError with Prometheus's own message when it fails."""
    try:
        response = await client.get("/api/v1/query", params={"query": promql})
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


def _value(data: dict[str, Any]) -> float | None:
    """A scalar, or the sum of a vector's samples; None for an empty vector or NaN."""
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar":
        value = _number(result)
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return None
        value = math.fsum(_number(s.get("value")) for s in result)
    else:
        raise ProviderError(f"prometheus returned a {kind}; the query must give a scalar or an instant vector")
    return value if math.isfinite(value) else None


def _counts(answers: dict[str, dict[str, Any]]) -> ReleaseStats:
    """Cumulative counters of one release from the counts-mode answers."""
    requests = _value(answers["requests"]) or 0.0
    errors = _value(answers["errors"]) or 0.0
    cumulative: list[tuple[float, float]] = []
    for sample in answers["buckets"].get("result", []):
        le = sample.get("metric", {}).get("le")
        bound = math.inf if le == "+Inf" else float(le) * 1000
        cumulative.append((bound, _number(sample.get("value"))))
    cumulative.sort()
    buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    previous = 0.0
    for bound, count in cumulative:
        index = len(LATENCY_BOUNDS_MS) if math.isinf(bound) else _nearest(bound)
        buckets[index] += max(0, round(count - previous))
        previous = max(previous, count)
    return ReleaseStats(requests=round(requests), errors=round(errors), latency_buckets=buckets)


def _nearest(bound_ms: float) -> int:
    return min(range(len(LATENCY_BOUNDS_MS)), key=lambda i: abs(LATENCY_BOUNDS_MS[i] - bound_ms))
