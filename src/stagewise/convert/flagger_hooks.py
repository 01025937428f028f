"""Flagger's webhooks → stagewise hooks, one type name for one type name.

Every webhook becomes one `spec.hooks` entry: Flagger's types keep their
names (`confirm-rollout`, `pre-rollout`, `rollout`, `confirm-traffic-increase`,
`confirm-promotion`, `post-rollout`, `rollback`, `event`; no type means
`rollout`, as in Flagger), the URL and timeout become the hook's http call,
and `metadata` travels in the call's body as Flagger sends it. A name that is
no stagewise name (a DNS label) is made into one.

Pure.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from pydantic import ValidationError

from stagewise.convert.kube import parse_go_duration
from stagewise.convert.ledger import Ledger
from stagewise.core.durations import format_duration
from stagewise.core.gates_spec import HttpCall
from stagewise.spec.yamltree import Path

HOOK_TYPES = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion",
              "post-rollout", "rollback", "event")
SPEC_HAS_HOOKS = True
"""`spec.hooks` exists in the spec format: webhooks are converted (False would report each, with its entry)."""


def hook_entry(webhook: dict[str, Any]) -> dict[str, Any] | None:
    """The `spec.hooks` entry of one webhook: its type, name and HTTP call; None for a type Flagger lacks, or a url
    that a hook cannot call (Flagger takes any string)."""
    kind = webhook.get("type") or "rollout"
    if kind not in HOOK_TYPES or not _valid({"url": webhook.get("url")}):
        return None
    call: dict[str, Any] = {"url": webhook["url"]}
    timeout = webhook.get("timeout")
    if isinstance(timeout, str):
        # a timeout Flagger itself would refuse, or one longer than a hook's call may wait: the hook keeps its default
        with contextlib.suppress(ValueError):
            seconds = parse_go_duration(timeout)
            if _valid({"url": call["url"], "timeout": seconds}):
                call["timeout"] = format_duration(seconds)
    entry: dict[str, Any] = {"type": kind, "name": _name(str(webhook.get("name", kind))), "http": call}
    if isinstance(webhook.get("metadata"), dict):
        entry["metadata"] = {str(k): str(v) for k, v in webhook["metadata"].items()}
    return entry


def _valid(call: dict[str, Any]) -> bool:
    """Whether a hook's http call may be `call`: the spec's own check of it."""
    try:
        HttpCall.model_validate(call)
    except ValidationError:
        return False
    return True


def _name(text: str) -> str:
    """`text` as a stagewise name: lower-case letters, digits and '-', at most 63."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "hook"


def convert_webhooks(led: Ledger, at: Path, webhooks: Any) -> list[dict[str, Any]]:
    """The hooks of `analysis.webhooks` at `at`; while the spec has none, each is reported with its entry."""
    hooks: list[dict[str, Any]] = []
    for i, webhook in enumerate(webhooks if isinstance(webhooks, list) else []):
        entry = hook_entry(webhook) if isinstance(webhook, dict) else None
        if entry is None:
            led.dropped((*at, i), f"expected a webhook with an http:// or https:// url and a type among "
                                  f"{', '.join(HOOK_TYPES)}")
        elif SPEC_HAS_HOOKS:
            led.mapped((*at, i))
            hooks.append(entry)
        else:
            led.dropped((*at, i), f"stagewise has no hooks yet; this {entry['type']} webhook is not converted "
                                  f"(it will be spec.hooks: {json.dumps(entry, separators=(', ', ': '))})")
    return hooks


__all__ = ["HOOK_TYPES", "SPEC_HAS_HOOKS", "convert_webhooks", "hook_entry"]
