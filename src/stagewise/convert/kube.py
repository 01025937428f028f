"""Kubernetes' small languages, read and written exactly: Go durations, `$(VAR)` references, image tags.

Argo Rollouts and Flagger parse durations with Go's `time.ParseDuration`
(Argo's pause also takes a bare number of seconds, and truncates to whole
seconds); Kubernetes expands `$(VAR)` in a container's command, args and env
values, where `$$` stands for one `$`; an image's tag is the nearest thing a
pod has to a release's version. Each is implemented here to the letter, so a
converted spec means what the manifest meant, and `--to argo` writes what
Kubernetes reads back the same way.

Pure: no I/O. Never guesses: what does not parse raises ValueError naming the
expected form.
"""

from __future__ import annotations

import math
import re

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
GO_DURATION_HINT = "a Go duration such as 30s, 5m, 1h or 1m30s"


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (`time.ParseDuration`): `1h30m`, `1.5s`, `250ms`, `0`."""
    body = text.strip()
    sign = -1.0 if body.startswith("-") else 1.0
    body = body.lstrip("+-")
    if body == "0":
        return 0.0
    position, total = 0, 0.0
    while position < len(body):
        match = _GO_PART.match(body, position)
        if match is None:
            raise ValueError(f"expected {GO_DURATION_HINT}, got {text!r}")
        total += float(match[1]) * _GO_UNITS[match[2]]
        position = match.end()
    if not body:
        raise ValueError(f"expected {GO_DURATION_HINT}, got {text!r}")
    return sign * total


def argo_pause_seconds(value: object) -> int:
    """Argo's `RolloutPause.DurationSeconds`: an int is seconds, so is a string of digits, else Go's parser;
    the result is truncated to whole seconds as Argo does."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a number of seconds or {GO_DURATION_HINT}, got {value!r}")
    if isinstance(value, int):
        seconds = value
    elif value.strip().lstrip("+-").isdigit():
        seconds = int(value)
    else:
        seconds = math.trunc(parse_go_duration(value))
    if seconds < 0:
        raise ValueError(f"a pause lasts zero seconds or more, got {value!r}")
    return seconds


def go_duration(seconds: float) -> str:
    """Whole seconds as Go writes them for people: `90` → `1m30s`, `3600` → `1h`; both Go and stagewise read it."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return out or "0s"


_REFERENCE = re.compile(r"\$\((?P<name>[^)]*)\)")


def expand(text: str, resolve: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: `$$` is one `$`; `$(NAME)` is `resolve[NAME]` when known, else kept as
    written; any other `$` is itself (k8s.io/kubernetes third_party/forked/golang/expansion)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(":
            match = _REFERENCE.match(text, i)
            if match is None:  # no closing parenthesis: Kubernetes keeps the text as written
                out.append(text[i:])
                break
            name = match["name"]
            out.append(resolve[name] if name in resolve else match[0])
            i = match.end()
        else:
            out.append(char)
            i += 1
    return "".join(out)


def escape(text: str) -> str:
    """The inverse of `expand` for text without references: each `$` that Kubernetes would read as the start of
    `$$` or `$(` is doubled, so the container sees exactly `text`."""
    out = []
    for i, char in enumerate(text):
        out.append(char)
        if char == "$" and i + 1 < len(text) and text[i + 1] in "$(":
            out.append("$")
    return "".join(out)


def is_port(value: object) -> bool:
    """A TCP port number a listen address can hold (Kubernetes' own range, 1–65535)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def image_version(image: str) -> str | None:
    """A release version from an image reference: its tag (`argoproj/rollouts-demo:blue` → `blue`), else the
    first 12 hex digits of its digest; None when it has neither or the tag is not a valid version."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        tag = last.rsplit(":", 1)[1]
        return tag if _VERSION.fullmatch(tag) else None
    if digest:
        hexdigits = digest.partition(":")[2]
        return hexdigits[:12] if re.fullmatch(r"[0-9a-f]{12,}", hexdigits) else None
    return None
