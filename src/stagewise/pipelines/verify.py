"""Verification of a soaking stage: its analysis templates measured on the release alone, each at its interval.

While a release soaks in a stage, each verification template (http, command,
or prometheus with a query: one value per check) is measured for the
stage's service, the release as both baseline and candidate, and the value
held to the template's `thresholdRange` (default: at most 0, which is what
http and command give for a pass). Like the controller's measurements, each
runs as a task of its own and is collected on a later pass, so a slow probe
never holds the pipeline loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from stagewise.analysis.judges.checks import interval_of
from stagewise.analysis.providers import Measurement, Provider, Target, get_provider
from stagewise.basics import waiting
from stagewise.core.pipeline import PipelineRelease
from stagewise.core.spec import AnalysisTemplate, ServiceSpec
from stagewise.errors import ProviderError
from stagewise.pipelines.machine import Check

Key = tuple[int, str, str]
"""(release id, stage, template)."""


@dataclass
class _Pending:
    task: asyncio.Task[Measurement]
    template: AnalysisTemplate


def judge(name: str, template: AnalysisTemplate, measurement: Measurement) -> Check:
    """One check: the release's value against the template's range."""
    value = measurement.values[1] if measurement.values is not None else None
    if value is None:
        return Check(template=name, failed=None, words="no value")
    low = template.threshold_range.min if template.threshold_range else None
    high = template.threshold_range.max if template.threshold_range else 0.0
    failed = (low is not None and value < low) or (high is not None and value > high)
    bounds = f"{low if low is not None else '-∞'}..{high if high is not None else '∞'}"
    return Check(template=name, failed=failed, words=f"{value:g} {'outside' if failed else 'within'} {bounds}")


class Verifier:
    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}
        self._next: dict[Key, float] = {}
        self._pending: dict[Key, _Pending] = {}

    def collect(self, release: PipelineRelease, stages: Sequence[tuple[str, ServiceSpec, Sequence[str]]],
                now: float) -> dict[str, list[Check]]:
        """Checks that finished, by stage; and start the ones due. `stages`: (stage, its service spec, templates)
        of the stages soaking now."""
        out: dict[str, list[Check]] = {}
        live: set[Key] = set()
        for stage, service, names in stages:
            for name in names:
                template = service.spec.analysis[name]
                key = (release.id, stage, name)
                live.add(key)
                pending = self._pending.get(key)
                if pending is not None and pending.task.done():
                    del self._pending[key]
                    out.setdefault(stage, []).append(self._check(name, pending))
                    pending = None
                if pending is None and now >= self._next.get(key, 0.0):
                    self._next[key] = now + interval_of(template)
                    target = Target(service.name, release.version, release.version, window=interval_of(template))
                    provider = self._provider(template.provider)
                    task = asyncio.create_task(provider.measure(template=template, target=target))
                    self._pending[key] = _Pending(task, template)
        for key in [k for k in self._pending if k[0] == release.id and k not in live]:
            self._pending.pop(key).task.cancel()
        return out

    def _provider(self, kind: str) -> Provider:
        if kind not in self._providers:
            self._providers[kind] = get_provider(kind)
        return self._providers[kind]

    def _check(self, name: str, pending: _Pending) -> Check:
        try:
            return judge(name, pending.template, pending.task.result())
        except ProviderError as exc:
            return Check(template=name, failed=None, words=f"could not measure: {exc}")
        except Exception as exc:  # noqa: BLE001 -- a provider's bug must not stop the pipelines: no data, why said
            return Check(template=name, failed=None, words=f"could not measure: {type(exc).__name__}: {exc}")

    async def close(self) -> None:
        pending, self._pending = self._pending, {}
        await waiting.cancelled((p.task for p in pending.values()), ProviderError)
