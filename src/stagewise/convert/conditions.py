"""Argo's `successCondition` / `failureCondition` ↔ stagewise's `thresholdRange`.

Argo evaluates an expression over `result` (a Prometheus vector, so usually
`result[0]`). Most conditions in the wild are one or two comparisons of the
value with a number — `result[0] >= 0.95`, `result[0] < 0.5 && result[0] > 0.1`
— and those are exactly a range. Anything else (functions, `||`, comparisons
of two results) is no range: the caller says so at the condition's position.

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_VALUE = r"(?:asFloat\(\s*result(?:\[0\])?\s*\)|asInt\(\s*result(?:\[0\])?\s*\)|result\[0\]|result)"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_COMPARISON = re.compile(
    rf"\s*(?:(?P<v1>{_VALUE})\s*(?P<op1><=|>=|<|>)\s*(?P<n1>{_NUMBER})"
    rf"|(?P<n2>{_NUMBER})\s*(?P<op2><=|>=|<|>)\s*(?P<v2>{_VALUE}))\s*"
)
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}
_NEGATE = {"<": ">=", ">": "<=", "<=": ">", ">=": "<"}


@dataclass(frozen=True)
class Range:
    """A closed range; `strict` says a bound was written with < or >, which a closed range reads as <= or >=."""

    min: float | None = None
    max: float | None = None
    strict: bool = False

    def meet(self, other: Range) -> Range:
        lows = [x for x in (self.min, other.min) if x is not None]
        highs = [x for x in (self.max, other.max) if x is not None]
        return Range(max(lows) if lows else None, min(highs) if highs else None, self.strict or other.strict)


def _comparisons(text: str) -> list[tuple[str, float]] | None:
    """`value OP number` terms joined by &&, with the value on the left; None when it is anything else."""
    terms = []
    for part in text.split("&&"):
        match = _COMPARISON.fullmatch(part.strip("() \t\n"))
        if match is None:
            return None
        if match["op1"]:
            terms.append((match["op1"], float(match["n1"])))
        else:
            terms.append((_FLIP[match["op2"]], float(match["n2"])))
    return terms


def _as_range(terms: list[tuple[str, float]]) -> Range:
    out = Range()
    for op, number in terms:
        strict = op in ("<", ">")
        out = out.meet(Range(min=number, strict=strict) if op in (">", ">=") else Range(max=number, strict=strict))
    return out


def success_range(condition: str) -> Range | None:
    """The range a successCondition keeps the value in; None when it is not one."""
    terms = _comparisons(condition)
    return _as_range(terms) if terms else None


def failure_range(condition: str) -> Range | None:
    """The range a failureCondition keeps the value in (its complement); None unless it is a single comparison —
    `a && b` failing means the value may leave through either side, which no single range says."""
    terms = _comparisons(condition)
    if not terms or len(terms) != 1:
        return None
    op, number = terms[0]
    return _as_range([(_NEGATE[op], number)])


def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(value)


def success_condition(minimum: float | None, maximum: float | None) -> str:
    """Argo's successCondition for a closed range over the query's first sample."""
    parts = []
    if minimum is not None:
        parts.append(f"result[0] >= {_number(minimum)}")
    if maximum is not None:
        parts.append(f"result[0] <= {_number(maximum)}")
    return " && ".join(parts) or "true"


__all__ = ["Range", "failure_range", "success_condition", "success_range"]
