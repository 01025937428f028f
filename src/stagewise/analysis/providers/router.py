"""router: the router's own per-release counters as a provider.

The controller already reads the router every tick (to drain instances and
watch traffic), so this provider does not ask again: it takes the counters of
that read — from the builtin router or HAProxy, whichever serves the service —
and picks the two releases out. Cheapest and most immediate of the providers:
it sees every request the users sent, no scrape interval in between.
"""

from __future__ import annotations

from stagewise.analysis.providers import Measurement, Target
from stagewise.core.spec import AnalysisTemplate
from stagewise.core.stats import RouterStats
from stagewise.errors import ProviderError


class RouterProvider:
    """Implements `Provider` over a snapshot of the router's counters."""

    def __init__(self, stats: RouterStats | None) -> None:
        self.stats = stats

    async def measure(self, *, template: AnalysisTemplate, target: Target) -> Measurement:
        del template
        if self.stats is None:
            raise ProviderError(f"the router of {target.service} reported no counters")
        return Measurement(
            counts=(self.stats.release(target.baseline), self.stats.release(target.candidate)),
            evidence={"provider": "router", "boot": self.stats.boot},
        )
