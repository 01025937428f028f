"""The usual guidance in words: the delivery-strategies guide's comparison table.

Kept as data so that `stagewise compare` can hold the words against the
numbers it measures, and say where they disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from stagewise.core.spec import StrategyName


@dataclass(frozen=True)
class Words:
    risk: str
    complexity: str
    rollback: str
    best_for: str


WORDS: dict[StrategyName, Words] = {
    "phased": Words(risk="low", complexity="medium", rollback="medium", best_for="large user bases"),
    "full": Words(risk="high", complexity="low", rollback="slow", best_for="small systems"),
    "canary": Words(risk="low", complexity="high", rollback="fast", best_for="critical systems"),
    "blue-green": Words(risk="very low", complexity="high", rollback="instant", best_for="zero-downtime needs"),
}
"""Risk level, complexity, rollback speed and what each strategy is best for, as the guide words them."""
