"""The gates and sinks of a Service spec: `hooks:`, `notifications:`, `windows:` and the `approval:` of a step.

    hooks:          calls at named points of a delivery (Flagger's names), HTTP or argv
    notifications:  sinks events are sent to (signed webhook, Slack-compatible, command)
    windows:        deny or allow rules in time (cron + duration + time zone, or one-off ranges)
    approval:       people who must say yes (a canary step, or a confirm hook a person may answer)

This module only states what is valid, with the words a person needs when it
is not; when a gate holds and when a sink is sent to is decided in
`core.gates`, `core.windows` and `core.notifications`. A time zone is looked
up in the system's zone database (read-only data, like the standard library
itself); nothing here reads a clock.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from stagewise.core.cron import parse_cron
from stagewise.core.durations import format_duration
from stagewise.core.spec_common import Duration, Model

HookType = Literal["confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion",
                   "post-rollout", "rollback", "event"]
HOOK_TYPES: tuple[str, ...] = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
                               "confirm-promotion", "post-rollout", "rollback", "event")
CONFIRM_TYPES = frozenset({"confirm-rollout", "confirm-traffic-increase", "confirm-promotion"})
"""Hooks that hold the delivery until they answer yes."""
CHECK_TYPES = frozenset({"pre-rollout", "rollout", "post-rollout"})
"""Hooks whose failure counts as a failed analysis check."""

NoticeEvent = Literal["started", "step", "paused", "waiting", "analysis-failed", "rolled-back", "succeeded", "failed"]
NOTICE_EVENTS: tuple[str, ...] = ("started", "step", "paused", "waiting", "analysis-failed", "rolled-back",
                                  "succeeded", "failed")

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _dns_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"expected a name of lower-case letters, digits and '-' (at most 63), got {value!r}")
    return value


def _http_url(value: str) -> str:
    if not re.match(r"https?://[^/\s]+", value):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value


# --- calls: what a hook or a sink runs --------------------------------------------------------


class HttpCall(Model):
    url: str
    """Where the call goes (http:// or https://)."""
    method: Literal["POST", "PUT", "GET"] = "POST"
    """POST or PUT carry the JSON body; GET sends it as well, for receivers that read it."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers (an Authorization the receiver expects, say)."""
    timeout: Annotated[Duration, Field(gt=0, le=300)] = 10.0
    """A call that has not answered by then counts as a failed answer."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class CommandCall(Model):
    args: Annotated[list[str], Field(min_length=1)]
    """argv, run without a shell; the JSON body arrives on standard input; exit status 0 is yes."""
    timeout: Annotated[Duration, Field(gt=0, le=3600)] = 60.0
    """A command still running then is killed, and counts as a failed answer."""

    @field_validator("args")
    @classmethod
    def _program(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("the first element of args must name a program")
        return value


# --- approvals -----------------------------------------------------------------------------


class ApprovalSpec(Model):
    approvers: list[str] = Field(default_factory=list)
    """Names of API tokens whose holders may approve; empty: any operator or admin."""
    count: Annotated[int, Field(ge=1, le=20)] = 1
    """Distinct approvers needed."""

    @model_validator(mode="after")
    def _enough_people(self) -> ApprovalSpec:
        if self.approvers and self.count > len(set(self.approvers)):
            raise ValueError(f"count {self.count} needs more approvers than the {len(set(self.approvers))} named")
        return self


# --- hooks -----------------------------------------------------------------------------------


class HookSpec(Model):
    name: str
    """Named in events, in the status and in the call's body."""
    type: HookType
    """When it is called: confirm-rollout, pre-rollout, rollout, confirm-traffic-increase, confirm-promotion,
    post-rollout, rollback or event."""
    http: HttpCall | None = None
    """Call a URL with the JSON body; a 2xx answer is yes."""
    command: CommandCall | None = None
    """Run argv with the JSON body on stdin; exit status 0 is yes."""
    approval: ApprovalSpec | None = None
    """confirm-* only: people who may answer the gate with `stagewise approve` (also without a call)."""
    interval: Annotated[Duration, Field(gt=0, le=3600)] = 10.0
    """How often a confirm or rollback hook is asked again, and a failed check hook tried again."""
    failure_limit: Annotated[int, Field(ge=1, le=100)] = 1
    """Check hooks (pre-rollout, rollout, post-rollout): failed answers that fail the delivery."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Passed along in the call's body as `metadata` (as Flagger's webhooks do: a load tester's command, say)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_name(value)

    @model_validator(mode="after")
    def _one_way_to_answer(self) -> HookSpec:
        calls = [k for k in ("http", "command") if getattr(self, k) is not None]
        if len(calls) > 1:
            raise ValueError("a hook is either an http call or a command, not both")
        if self.approval is not None and self.type not in CONFIRM_TYPES:
            raise ValueError(f"approval is for confirm-* hooks (a gate a person may answer), not {self.type}")
        if not calls and self.approval is None:
            answer = " or approval (people who answer it)" if self.type in CONFIRM_TYPES else ""
            raise ValueError(f"a hook needs http (url, method, headers, timeout) or command (args){answer}")
        return self

    @property
    def confirm(self) -> bool:
        return self.type in CONFIRM_TYPES

    @property
    def check(self) -> bool:
        return self.type in CHECK_TYPES


def unique_names(items: list[HookSpec] | list[NotificationSpec], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise ValueError(f"two {what} are named {item.name!r}; names must differ")
        seen.add(item.name)


# --- notifications -----------------------------------------------------------------------------


class WebhookSink(HttpCall):
    secret: str | None = None
    """Signs each body: header X-Stagewise-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>."""


class SlackSink(Model):
    url: str
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat, ...)."""
    dashboard: str | None = None
    """Base URL of the dashboard the message links to; default: the server's own address."""
    timeout: Annotated[Duration, Field(gt=0, le=300)] = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


def _all_events() -> list[NoticeEvent]:
    return ["started", "step", "paused", "waiting", "analysis-failed", "rolled-back", "succeeded", "failed"]


class NotificationSpec(Model):
    name: str
    webhook: WebhookSink | None = None
    """A generic JSON webhook, signed with HMAC-SHA256 when a secret is given."""
    slack: SlackSink | None = None
    """A Slack-compatible incoming webhook: blocks with the verdict in words and a link to the dashboard."""
    command: CommandCall | None = None
    """argv with the JSON body on stdin; exit status 0 means delivered."""
    events: Annotated[list[NoticeEvent], Field(min_length=1)] = Field(default_factory=lambda: _all_events())
    """Which events this sink gets: started, step, paused, waiting, analysis-failed, rolled-back, succeeded,
    failed (default: all)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_name(value)

    @model_validator(mode="after")
    def _one_sink(self) -> NotificationSpec:
        given = [k for k in ("webhook", "slack", "command") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a notification names exactly one sink: webhook, slack or command"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    @property
    def kind(self) -> str:
        return "webhook" if self.webhook else "slack" if self.slack else "command"


# --- windows -----------------------------------------------------------------------------------


def check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin or UTC") from exc
    return value


def check_moment(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"expected a date such as 2024-12-24 or a time such as 2024-12-24T18:00, "
                         f"got {value!r}") from exc
    return value


class WindowRule(Model):
    cron: str | None = None
    """When each occurrence opens, in `timeZone`'s wall-clock time (5 fields: `0 18 * * 5` is Friday 18:00)."""
    duration: Annotated[Duration, Field(gt=0, le=366 * 86400)] | None = None
    """How long each occurrence lasts, in wall-clock time (64h: Friday 18:00 to Monday 10:00)."""
    start: str | None = None
    """A one-off window's first moment (2024-12-23 or 2024-12-23T18:00; an offset in it beats timeZone)."""
    end: str | None = None
    """A one-off window's end, not included (2025-01-02 means until that day begins)."""
    time_zone: str = "UTC"
    """An IANA time zone (Europe/Berlin); daylight-saving changes are followed."""

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_zone(value)

    @field_validator("start", "end")
    @classmethod
    def _moment(cls, value: str | None) -> str | None:
        return value if value is None else check_moment(value)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cron(value)
        return value

    @model_validator(mode="after")
    def _one_form(self) -> WindowRule:
        recurring = self.cron is not None or self.duration is not None
        once = self.start is not None or self.end is not None
        if recurring == once:
            raise ValueError("a window is either recurring (cron and duration) or one-off (start and end)")
        if recurring and (self.cron is None or self.duration is None):
            raise ValueError("a recurring window needs both cron (when it opens) and duration (how long)")
        if once and (self.start is None or self.end is None):
            raise ValueError("a one-off window needs both start and end")
        return self

    def words(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron!r} for {format_duration(self.duration or 0)} ({self.time_zone})"
        return f"{self.start} to {self.end} ({self.time_zone})"


class WindowSpec(Model):
    TAG: ClassVar[str] = "window"
    name: str | None = None
    """Named in the reason a delivery waits."""
    deny: WindowRule | None = None
    """No delivery starts or adds traffic while this window is open (rollback and abort always may)."""
    allow: WindowRule | None = None
    """With any allow window, deliveries start and add traffic only while one is open."""

    @model_validator(mode="after")
    def _one_rule(self) -> WindowSpec:
        if (self.deny is None) == (self.allow is None):
            raise ValueError("a window is exactly one of deny or allow")
        return self

    @property
    def rule(self) -> WindowRule:
        rule = self.deny or self.allow
        assert rule is not None  # the validator guarantees one
        return rule

    def words(self) -> str:
        kind = "deny" if self.deny is not None else "allow"
        return f"{kind} window" + (f" {self.name}" if self.name else "") + f" ({self.rule.words()})"


class WindowsFile(Model):
    """A shared file of windows for every service (`stagewise server --windows FILE`)."""

    api_version: Literal["stagewise.dev/v1alpha1"]
    kind: Literal["Windows"]
    windows: list[WindowSpec] = Field(default_factory=list)
