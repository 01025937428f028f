"""The message a Slack-compatible incoming webhook gets: the verdict in words, the facts, a dashboard link.

Slack, Mattermost and Rocket.Chat all take `{"text": ..., "blocks": [...]}`
(Block Kit); `text` is the fallback a notification on a phone shows. The
verdict is said the way a person on call needs it — "v3 was rolled back:
v2 serves every user again" — with the reason the delivery gave, and a
button to the service's page on the dashboard.

Pure: a payload in, a message out.
"""

from __future__ import annotations

from typing import Any

VERDICTS = {
    "started": "{release} is being delivered to {service} ({strategy}, from {stable})",
    "step": "{release} moved a step ({step}) on {service}",
    "paused": "the delivery of {release} to {service} is paused, waiting for a person",
    "waiting": "the delivery of {release} to {service} is waiting",
    "analysis-failed": "{release} failed its analysis on {service}: rolling back to {stable}",
    "rolled-back": "{release} was rolled back: {stable} serves every user of {service} again",
    "succeeded": "{release} is the stable release of {service}",
    "failed": "the delivery of {release} to {service} failed and could not be rolled back: a person must act",
}
ICONS = {"succeeded": "✅", "rolled-back": "↩️", "analysis-failed": "❌", "failed": "🚨", "paused": "⏸️",
         "waiting": "⏳", "started": "🚀", "step": "➡️"}


def verdict(payload: dict[str, Any]) -> str:
    """The event in one sentence."""
    words = {k: payload.get(k) if payload.get(k) is not None else "-" for k in
             ("release", "service", "strategy", "stable", "step")}
    return VERDICTS.get(str(payload.get("event")), "{service}: " + str(payload.get("message", ""))).format(**words)


def message(payload: dict[str, Any], dashboard: str) -> dict[str, Any]:
    """The JSON for the incoming webhook."""
    event = str(payload.get("event"))
    said = verdict(payload)
    link = f"{dashboard.rstrip('/')}/services/{payload.get('service')}"
    facts = [f"*{name}:* {payload[key]}" for name, key in (("phase", "phase"), ("strategy", "strategy"),
                                                            ("step", "step"), ("delivery", "delivery"))
             if payload.get(key) is not None]
    return {
        "text": f"{ICONS.get(event, '')} {said}".strip(),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{ICONS.get(event, '')} *{said}*".strip()}},
            {"type": "section", "text": {"type": "mrkdwn", "text": str(payload.get("message") or "-")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(facts) or event}]},
            {"type": "actions", "elements": [{"type": "button", "url": link,
                                              "text": {"type": "plain_text", "text": "Open in the dashboard"}}]},
        ],
    }
