"""The server's settings: from its command line and environment, a settings file, and defaults — in that order.

A setting given on the command line or in the environment (`--log-level`,
`STAGEWISE_LOG_LEVEL`, ...) is fixed for the life of the process. The others
come from the settings file (`--settings FILE`, TOML, the options' names as
keys: `log-level = "debug"`), which the server reads at start and again on
SIGHUP (`systemctl reload stagewise`):

| setting | re-read on SIGHUP |
| --- | --- |
| `log-level` (debug, info, warning, error) | yes |
| `log-format` (text, json) | yes |
| `tick` (seconds between reconcile passes, or `500ms`) | yes |
| `resync` (seconds between two full reconciles of a service with nothing in flight, or `1m`; 0: every tick) | yes |
| `listen` | no: the socket is bound at start; a change is reported and waits for a restart |

The state directory is never a setting of the file: it is where the server's
whole state lives, so it is given once, on the command line or in
`STAGEWISE_STATE`. A settings file that is missing is empty (the defaults
apply); one that cannot be read or is invalid stops the server at start with
each problem at file:line:column, and on SIGHUP is reported and ignored — the
settings in force stay, nothing is half applied.

Pure but for reading the file: applying settings is the server's job (api/server.py).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.api.logs import LOG_FORMATS, LOG_LEVELS, LogFormat
from stagewise.controller.controller import RESYNC, TICK
from stagewise.core.durations import parse_duration
from stagewise.errors import Problem, SettingsError

DEFAULT_LISTEN = "127.0.0.1:7420"
TICK_MAX = 60.0
"""Longest pause between two reconcile passes: an abort must not wait for more."""
RESYNC_MAX = 3600.0
"""Longest period between two full reconciles of an idle service: what drifted outside stagewise (an instance
killed by hand) must be put right within it."""
RELOADABLE = ("log-level", "log-format", "tick", "resync")
"""Settings a SIGHUP re-reads; the others take effect at the next start."""


@dataclass(frozen=True)
class ServerSettings:
    listen: str = DEFAULT_LISTEN
    """host:port of the API and the dashboard; port 0 picks a free one."""
    log_level: str = "info"
    """The least severe level logged: debug, info, warning or error."""
    log_format: LogFormat = "text"
    """text (a line a person reads) or json (one object per line)."""
    tick: float = TICK
    """Seconds between two reconcile passes."""
    resync: float = RESYNC
    """Seconds between two full reconciles of a service with nothing in flight (0: on every pass)."""

    def changed(self, other: ServerSettings) -> dict[str, tuple[Any, Any]]:
        """The settings that differ from `other`, by their names in the file: (this value, the other's)."""
        return {_key(f.name): (getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(other, f.name)}

    def in_words(self) -> str:
        return ", ".join(f"{_key(f.name)}={getattr(self, f.name)}" for f in dataclasses.fields(self))


def _key(field: str) -> str:
    return field.replace("_", "-")


def check_listen(value: object) -> str:
    found = re.fullmatch(r"[^\s:]+:(\d{1,5})", value) if isinstance(value, str) else None
    if found is None or int(found.group(1)) > 65535:
        raise ValueError(f"expected host:port (such as 127.0.0.1:7420), got {value!r}")
    return found.group(0)


def check_level(value: object) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.lower()


def check_format(value: object) -> LogFormat:
    if value not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return value


def check_tick(value: object) -> float:
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        value = float(value)  # seconds, as the command line and the environment give them (0.25)
    seconds = parse_duration(value)
    if not 0 < seconds <= TICK_MAX:
        raise ValueError(f"expected more than 0 and at most {TICK_MAX:g} seconds, got {value!r}")
    return seconds


def check_resync(value: object) -> float:
    seconds = parse_duration(value)
    if seconds > RESYNC_MAX:
        raise ValueError(f"expected 0 (every pass) up to {RESYNC_MAX:g} seconds, got {value!r}")
    return seconds


_CHECKS = {"listen": check_listen, "log-level": check_level, "log-format": check_format, "tick": check_tick,
           "resync": check_resync}


def _line_of(text: str, key: str) -> int:
    """The line where `key` is set in a TOML text (1 when it cannot be told)."""
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    return next((n for n, line in enumerate(text.splitlines(), 1) if pattern.match(line)), 1)


def read_settings_file(path: Path) -> dict[str, Any]:
    """The settings `path` sets, checked, by field name; {} when there is no such file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError([Problem(str(path), 1, 1, "", f"cannot read the settings file: {exc}")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([_toml_problem(path, exc)]) from exc
    values, problems = {}, []
    for key, value in data.items():
        check = _CHECKS.get(key)
        if check is None:
            problems.append(Problem(str(path), _line_of(text, key), 1, key, "not a setting; expected one of "
                                    + ", ".join(_CHECKS)))
            continue
        try:
            values[key.replace("-", "_")] = check(value)
        except ValueError as exc:
            problems.append(Problem(str(path), _line_of(text, key), 1, key, str(exc)))
    if problems:
        raise SettingsError(problems)
    return values


def _toml_problem(path: Path, exc: tomllib.TOMLDecodeError) -> Problem:
    found = re.search(r"^(.*) \(at line (\d+), column (\d+)\)$", str(exc))
    if found is None:
        return Problem(str(path), 1, 1, "", f"not TOML: {exc}")
    return Problem(str(path), int(found.group(2)), int(found.group(3)), "", f"not TOML: {found.group(1)}")


def load_settings(path: Path | None, fixed: Mapping[str, Any]) -> ServerSettings:
    """The settings in force: `fixed` (given on the command line or in the environment; None: not given) over
    the settings file at `path` over the defaults. Raises SettingsError for a file that is not right."""
    from_file = read_settings_file(path) if path is not None else {}
    given = {name: value for name, value in fixed.items() if value is not None}
    return ServerSettings(**{**from_file, **given})
