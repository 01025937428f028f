"""Stored rows written by an older stagewise, brought to today's shape (for the forward migrations).

The store keeps services and deliveries as JSON. When a model's shape
changes, the rows already on disk are rewritten once, by a schema migration
(`sqlite.MIGRATIONS`), with the functions here: each takes one row's parsed
JSON, changes it in place, and says whether it changed anything. They
never drop what today's models still read.

Only JSON in, JSON out: no database, no I/O.
"""

from __future__ import annotations

from typing import Any

from stagewise.core.judge_state import JUDGE_KINDS
from stagewise.core.spec import TEMPLATE_MODELS

OLD_NOTE_SUFFIX = "@provider"
"""Where a run's provider notes were kept, inside judge_state, before they had a field of their own."""


def templates_by_provider(spec: Any) -> bool:
    """Analysis templates stored before each provider had its own model carried every provider's fields
    (null, or their defaults): keep each template's own."""
    analysis = spec.get("spec", {}).get("analysis") if isinstance(spec, dict) else None
    if not isinstance(analysis, dict):
        return False
    changed = False
    for template in analysis.values():
        model = TEMPLATE_MODELS.get(template.get("provider", "router")) if isinstance(template, dict) else None
        if model is None:
            continue
        own = {name for name, info in model.model_fields.items()} | {
            info.alias for info in model.model_fields.values() if info.alias}
        for key in [k for k in template if k not in own]:
            del template[key]
            changed = True
    return changed


def typed_judge_states(delivery: dict[str, Any]) -> bool:
    """Judge states stored as loose mappings: provider notes move to the run's `notes`; a state of a kind no
    judge makes any more is dropped (the judge starts afresh, as it did with such a state)."""
    changed = False
    runs = list((delivery.get("analysis") or {}).values()) + list(delivery.get("past_analysis") or [])
    for run in runs:
        states = run.get("judge_state") if isinstance(run, dict) else None
        if not isinstance(states, dict):
            continue
        notes = run.setdefault("notes", {})
        for key in list(states):
            state = states[key]
            if key.endswith(OLD_NOTE_SUFFIX):
                if isinstance(state, dict):
                    notes[key.removesuffix(OLD_NOTE_SUFFIX)] = state
                del states[key]
                changed = True
            elif not isinstance(state, dict) or state.get("kind") not in JUDGE_KINDS:
                del states[key]
                changed = True
    return changed
