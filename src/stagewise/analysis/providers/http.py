"""http: a synthetic probe — one request, judged by its status and how long it took.

For what users' traffic cannot show yet (a candidate with no traffic, a
pre-promotion check of a blue-green preview) or must always hold (a health
endpoint). The URL may name {{service}}, {{release}} or {{candidate}}; the
probe is of the candidate only, so the value is the candidate's: 0 when the
status is one of `expectedStatus` within `latencyLimit`, 1 otherwise, and the
threshold judge (range {max: 0} by default) counts the 1s against
`failureLimit`. A connection refused or a timeout is a failed probe, not a
provider error: it is exactly what the probe is there to find.
"""

from __future__ import annotations

import time

import httpx

from stagewise.analysis.providers import Measurement, Target, fill, not_mine
from stagewise.core.spec import AnalysisTemplate, HttpTemplate
from stagewise.errors import ProviderError

DEFAULT_LIMIT = 5.0
"""Seconds a probe may take when the template sets no latencyLimit; also its timeout."""


class HttpProvider:
    """Implements `Provider` for `provider: http`."""

    async def measure(self, *, template: AnalysisTemplate, target: Target) -> Measurement:
        if not isinstance(template, HttpTemplate):
            raise not_mine("http", template)
        url = fill(template.url, target=target, release=target.candidate)
        limit = template.latency_limit or DEFAULT_LIMIT
        evidence: dict[str, object] = {"provider": "http", "method": template.method, "url": url,
                                       "expected_status": template.expected_status, "latency_limit_s": limit}
        started = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=limit, follow_redirects=False) as client:
                response = await client.request(template.method, url)
        except httpx.InvalidURL as exc:
            raise ProviderError(f"http probe URL {url!r} is not valid: {exc}", delay=60.0) from exc
        except httpx.HTTPError as exc:
            evidence.update({"error": f"{type(exc).__name__}: {exc}"[:300],
                             "latency_ms": round((time.monotonic() - started) * 1000, 3)})
            return Measurement(values=(None, 1.0), evidence=evidence)
        took = time.monotonic() - started
        passed = response.status_code in template.expected_status and took <= limit
        evidence.update({"status": response.status_code, "latency_ms": round(took * 1000, 3), "passed": passed})
        if not passed:
            evidence["body"] = response.text[:300]
        return Measurement(values=(None, 0.0 if passed else 1.0), evidence=evidence)
