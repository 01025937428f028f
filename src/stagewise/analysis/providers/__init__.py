"""Metric providers: where an analysis gets its numbers.

A provider measures one analysis template for the baseline and the candidate
at the same moment, and returns a `Measurement`: per-release counters
(requests, errors, latency histogram — the router's, or a team's own counters
and histograms in Prometheus) that the controller turns into increments for
the judges, or one value per release (a PromQL query: a gauge for the
sequential value judge or a value for threshold; an http probe, a command's
exit status) on the tick it was measured. Each backend lives in
its own module and imports `stagewise.core` and `stagewise.errors` only —
never another driver — and translates its failures into `ProviderError`
(temporary: the next interval tries again).

    router      the router's own counters (builtin or HAProxy), already at hand
    prometheus  PromQL over Prometheus's HTTP API, {{service}} {{release}} {{window}} filled in;
                counters followed series by series with increase()'s reset rule
    http        a synthetic probe: method, URL, expected status, latency limit
    command     argv run without a shell; exit status 0 passes, output kept as evidence
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from stagewise.core.spec import AnalysisTemplate
from stagewise.core.stats import ReleaseStats
from stagewise.errors import ProviderError, UnknownDriverError

__all__ = ["PROVIDER_KINDS", "Measurement", "Provider", "Target", "fill", "get_provider", "not_mine"]


@dataclass(frozen=True)
class Target:
    """What is being measured: a service's baseline and candidate releases."""

    service: str
    baseline: str
    candidate: str
    window: float
    """Seconds the measurement should cover ({{window}}): the template's interval."""


@dataclass(frozen=True)
class Measurement:
    counts: tuple[ReleaseStats, ReleaseStats] | None = None
    """Cumulative counters of the baseline and the candidate (the caller takes differences)."""
    values: tuple[float | None, float | None] | None = None
    """One value per release for this check; None for a release with no data."""
    evidence: dict[str, Any] = field(default_factory=dict)
    """What was asked and answered: the query, the status, the output."""


class Provider(Protocol):
    async def measure(self, *, template: AnalysisTemplate, target: Target) -> Measurement:
        """Measure `template` for both releases of `target`; ProviderError when it cannot."""


PROVIDER_KINDS = ("router", "prometheus", "http", "command")
_PLACEHOLDER = re.compile(r"\{\{\s*(service|release|baseline|candidate|window)\s*\}\}")


def fill(text: str, *, target: Target, release: str, escape: Callable[[str], str] | None = None) -> str:
    """`text` with {{service}}, {{release}}, {{baseline}}, {{candidate}} and {{window}} replaced.

    `escape` makes each value fit where it lands (a PromQL string or regex: see prometheus.fill_promql).
    """
    window = f"{max(1, round(target.window))}s"
    names = {"service": target.service, "release": release, "baseline": target.baseline,
             "candidate": target.candidate, "window": window}
    return _PLACEHOLDER.sub(lambda m: escape(names[m[1]]) if escape else names[m[1]], text)


def not_mine(kind: str, template: AnalysisTemplate) -> ProviderError:
    """The error for a template of another provider handed to the `kind` provider (the caller's mistake)."""
    return ProviderError(f"the {kind} provider cannot measure a template of provider {template.provider}",
                         delay=60.0)


def get_provider(kind: str) -> Provider:
    """The provider backend named `kind` (`router` needs the counters: see `router.RouterProvider`)."""
    if kind == "prometheus":
        from stagewise.analysis.providers.prometheus import PrometheusProvider

        return PrometheusProvider()
    if kind == "http":
        from stagewise.analysis.providers.http import HttpProvider

        return HttpProvider()
    if kind == "command":
        from stagewise.analysis.providers.command import CommandProvider

        return CommandProvider()
    raise UnknownDriverError("metric provider", kind, [k for k in PROVIDER_KINDS if k != "router"])
