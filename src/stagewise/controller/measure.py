"""Ask the metric providers of open analysis runs, each at its template's interval, without stalling a tick.

The router's counters come with every tick for free; a Prometheus query, an
http probe or a command can take seconds (a command up to a minute). The
reconcile loop must not wait for them — an abort that has to happen now must
not queue behind a smoke test — so each measurement runs as a task of its own.
A tick starts the measurements that are due, collects the ones that finished,
and hands those to the judges (through `engine.decide`); a measurement still running is
simply collected on a later tick.

Providers that give counters (prometheus without a query) are differenced
here: the first answer is the starting point, each later one yields the
increment since. That memory is in this process only, so after a controller
restart the first answer is a starting point again — one interval lost, never
a wrong number.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from stagewise.analysis.judges.checks import interval_of
from stagewise.analysis.judges.runs import Measured
from stagewise.analysis.providers import Measurement, Provider, Target, get_provider
from stagewise.basics import waiting
from stagewise.core.delivery import Delivery
from stagewise.core.spec import AnalysisTemplate
from stagewise.core.stats import ReleaseStats
from stagewise.core.verdict import OPEN
from stagewise.errors import ProviderError

Key = tuple[str, int, int, str, str]
"""(service, delivery id, attempt, run key, template name)."""


@dataclass
class _Pending:
    task: asyncio.Task[Measurement]
    template: AnalysisTemplate


class Measurer:
    """The measurements in flight and what they last said, per analysis run and template."""

    def __init__(self, providers: dict[str, Provider] | None = None) -> None:
        self._providers: dict[str, Provider] = dict(providers or {})
        self._next: dict[Key, float] = {}
        self._pending: dict[Key, _Pending] = {}
        self._counts: dict[Key, tuple[ReleaseStats, ReleaseStats]] = {}

    def provider(self, kind: str) -> Provider:
        if kind not in self._providers:
            self._providers[kind] = get_provider(kind)
        return self._providers[kind]

    def collect(self, delivery: Delivery, now: float) -> dict[tuple[str, str], Measured]:
        """What finished since the last tick, and start what is due; keyed by (run key, template)."""
        out: dict[tuple[str, str], Measured] = {}
        if delivery.stable is None:
            return out
        target_base = (delivery.service, delivery.stable.version, delivery.candidate.version)
        live: set[Key] = set()
        for run in delivery.analysis.values():
            if run.verdict.outcome not in OPEN:
                continue
            for name in run.templates:
                template = delivery.spec.spec.analysis[name]
                if template.provider == "router":
                    continue
                key: Key = (delivery.service, delivery.id, delivery.attempt, run.key, name)
                live.add(key)
                pending = self._pending.get(key)
                if pending is not None and pending.task.done():
                    del self._pending[key]
                    out[run.key, name] = self._result(key, pending)
                    pending = None
                if pending is None and now >= self._next.get(key, 0.0):
                    self._next[key] = now + interval_of(template)
                    target = Target(*target_base, window=interval_of(template))
                    task = asyncio.create_task(self.provider(template.provider).measure(template=template,
                                                                                        target=target))
                    self._pending[key] = _Pending(task, template)
        self._forget(delivery.service, live)
        return out

    def _result(self, key: Key, pending: _Pending) -> Measured:
        try:
            m = pending.task.result()
        except ProviderError as exc:
            return Measured(error=str(exc), evidence={"provider": pending.template.provider})
        except Exception as exc:  # noqa: BLE001 -- a provider's bug must not stop the reconcile loop: it is the error
            return Measured(error=f"{type(exc).__name__}: {exc}", evidence={"provider": pending.template.provider})
        if m.counts is None:
            return Measured(values=m.values, evidence=m.evidence)
        before = self._counts.get(key)
        self._counts[key] = m.counts
        if before is None:
            return Measured(evidence={**m.evidence, "note": "first measurement: the starting point"})
        return Measured(baseline=m.counts[0].minus(before[0]), candidate=m.counts[1].minus(before[1]),
                        values=m.values, evidence=m.evidence)

    def forget(self, service: str) -> None:
        """Drop everything of `service` (deleted): its measurements in flight are cancelled."""
        self._forget(service, set())

    def _forget(self, service: str, live: set[Key]) -> None:
        """Drop what belongs to runs of `service` that ended; cancel their measurements."""
        for key in [k for k in self._pending if k[0] == service and k not in live]:
            self._pending.pop(key).task.cancel()
        for store in (self._next, self._counts):
            for key in [k for k in store if k[0] == service and k not in live]:
                del store[key]

    async def close(self) -> None:
        pending, self._pending = self._pending, {}
        await waiting.cancelled((p.task for p in pending.values()), ProviderError)

