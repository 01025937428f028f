"""Notification sinks and hook calls: the driver that talks to the world outside the data plane.

    Notifier.send(kind=, target=, payload=)   one notification to one sink; NotifyError unless it took it
    Notifier.call(http=|command=, body=)      one hook call; an Answer, yes or no, never an exception

Sinks: `webhook` (JSON, signed with HMAC-SHA256 when it has a secret:
`signing.py`), `slack` (a Slack-compatible incoming webhook: `slack.py`),
`command` (argv with the JSON on stdin) and `hook` (an `event` hook: its
http call or command). The controller's sender (controller/outbox.py)
decides when to send and retries; this package only sends, once per call.

Like every driver it imports `stagewise.core` and `stagewise.errors` only,
never another driver, and translates its failures into `NotifyError`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from stagewise.core.gates_spec import CommandCall, HookSpec, HttpCall, SlackSink, WebhookSink
from stagewise.errors import NotifyError
from stagewise.notify import signing, slack
from stagewise.notify.calls import Answer, command_call, http_call

__all__ = ["SINK_KINDS", "Answer", "Notifier", "encode"]

SINK_KINDS = ("webhook", "slack", "command", "hook")


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys in order."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


class Notifier:
    """Sends notifications and makes hook calls over one HTTP client."""

    def __init__(self, *, dashboard: str = "http://127.0.0.1:7420", clock: Any = time.time) -> None:
        self.dashboard = dashboard
        """Where Slack messages link to (the server's own address, unless a sink names another)."""
        self._clock = clock
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def call(self, *, hook: HookSpec, body: dict[str, Any]) -> Answer:
        """Call `hook` with `body`: its http call or its command."""
        raw = encode(body)
        if hook.http is not None:
            return await http_call(self._http(), hook.http, raw, {"X-Stagewise-Id": str(body.get("id", ""))})
        assert hook.command is not None  # a confirm hook answered by people alone is never called
        return await command_call(hook.command, raw, {"STAGEWISE_HOOK": hook.name})

    async def send(self, *, kind: str, target: dict[str, Any], payload: dict[str, Any]) -> Answer:
        """Deliver `payload` to the sink `target` of kind `kind`; NotifyError when it did not take it."""
        if kind == "webhook":
            answer = await self._webhook(WebhookSink.model_validate(target), payload)
        elif kind == "slack":
            sink = SlackSink.model_validate(target)
            message = slack.message(payload, sink.dashboard or self.dashboard)
            answer = await http_call(self._http(), HttpCall(url=sink.url, timeout=sink.timeout), encode(message), {})
        elif kind == "command":
            answer = await command_call(CommandCall.model_validate(target), encode(payload))
        elif kind == "hook":
            answer = await self.call(hook=HookSpec.model_validate(target), body=payload)
        else:
            raise NotifyError(f"unknown sink kind {kind!r}; expected one of {', '.join(SINK_KINDS)}", delay=3600)
        if not answer.ok:
            raise NotifyError(answer.status + (f": {answer.said[:200]}" if answer.said else ""))
        return answer

    async def _webhook(self, sink: WebhookSink, payload: dict[str, Any]) -> Answer:
        raw = encode(payload)
        headers = {"X-Stagewise-Event": str(payload.get("event", "")), "X-Stagewise-Id": str(payload.get("id", ""))}
        if sink.secret:
            headers[signing.HEADER] = signing.sign(sink.secret, int(self._clock()), raw)
        return await http_call(self._http(), sink, raw, headers)
