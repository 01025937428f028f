"""One HTTP call or one command, with a JSON body, answered yes or no: what hooks and sinks share.

An HTTP call sends the body with its method and headers and waits at most
its timeout; a 2xx answer is yes. A command runs its argv — never through a
shell — with the body on standard input, in a session of its own, and is
killed with everything it started when its timeout passes; exit status 0
is yes. Either way the answer says what happened in a few words (`HTTP 503`,
`exit 1`, `timed out after 5s`, `connection refused`), with the start of
what the other side said, and how long it took.

Failures of the call itself (no route, refused, a program that does not
exist) are answers too — "no" with the reason — never exceptions: a hook's
caller decides what a no means.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import httpx

from stagewise.basics import programs
from stagewise.core.durations import format_duration
from stagewise.core.gates_spec import CommandCall, HttpCall

USER_AGENT = "stagewise"
SAID_KEPT = 400
"""Characters of an answer's body or output kept (its start)."""


@dataclass(frozen=True)
class Answer:
    ok: bool
    status: str
    said: str
    """The start of the body or output, one line."""
    seconds: float


def one_line(text: str, limit: int = SAID_KEPT) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


async def http_call(client: httpx.AsyncClient, call: HttpCall, body: bytes, headers: dict[str, str]) -> Answer:
    """Send `body` (JSON) as `call` says; yes on a 2xx answer."""
    started = time.monotonic()
    sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **call.headers, **headers}
    try:
        response = await client.request(call.method, call.url, content=body, headers=sent, timeout=call.timeout)
    except httpx.TimeoutException:
        return Answer(False, f"timed out after {format_duration(call.timeout)}", "", time.monotonic() - started)
    except httpx.HTTPError as exc:
        return Answer(False, _transport_words(exc), "", time.monotonic() - started)
    return Answer(200 <= response.status_code < 300, f"HTTP {response.status_code}",
                  one_line(response.text), time.monotonic() - started)


def _transport_words(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    return one_line(text, 120)


async def command_call(call: CommandCall, body: bytes, env: dict[str, str] | None = None) -> Answer:
    """Run `call.args` with `body` on stdin; yes on exit status 0."""
    try:
        ended = await programs.run(call.args, timeout=call.timeout, stdin=body, env={**os.environ, **(env or {})})
    except OSError as exc:
        return Answer(False, f"cannot run {call.args[0]!r}: {exc.strerror or exc}", "", 0.0)
    if ended.timed_out:
        return Answer(False, f"timed out after {format_duration(call.timeout)}", "", ended.seconds)
    said = one_line(ended.output.decode("utf-8", "replace"))
    return Answer(ended.code == 0, f"exit {ended.code}", said, ended.seconds)
