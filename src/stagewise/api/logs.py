"""The server's log: plain lines for a terminal, or one JSON object per line for a log pipeline.

`stagewise server --log-format json` writes each record as one line of JSON
with `time` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message`, the
context the code attached to it (`service`, `delivery`, `kind`, ...) and
`exception` when there is one; the text format puts the same context after
the message as `key=value`. Both go to stderr, where systemd's journal (or
a terminal) takes them.

Besides what the modules log themselves, `EventLog` — an observer of the
controller (controller/observer.py) — logs every event the controller
commits to a delivery's log (phase changes, steps, verdicts, instances,
people's verbs) at INFO with its service and delivery, so an operator reads
in the journal what `stagewise status` shows.

Reconfiguring is atomic and may happen at any time (SIGHUP): the root
logger's one handler gets a new formatter, the `stagewise` loggers a new
level; the libraries below (httpx, uvicorn) only ever say their warnings. It must never lose a
record nor print a traceback for an unserialisable context value (its repr
is written instead).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from stagewise.core.delivery import Delivery, Event
from stagewise.errors import StagewiseError

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime",
                                                                                   "taskName"}
"""Attributes every record has; whatever else a record carries is context the caller attached (`extra=`)."""
_HANDLER_NAME = "stagewise"
events_log = logging.getLogger("stagewise.events")


def context_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(context_of(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=repr, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...`, for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = context_of(record)
        if not context:
            return line
        head, newline, rest = line.partition("\n")  # the context goes on the message's line, before a traceback
        pairs = " ".join(f"{k}={v}" for k, v in context.items())
        return f"{head} {pairs}{newline}{rest}"


_format_in_force: list[LogFormat] = []
"""The format `configure_logging` set last (none: the server's logging is not configured)."""


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Send every record of `level` and above to stderr in `log_format`; again at any time to change either."""
    _format_in_force[:] = [log_format]
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    # The level is stagewise's own; the libraries under it (httpx logs every request at INFO, uvicorn its
    # banners) say only their warnings, whatever the level.
    ours = logging.getLevelNamesMapping()[level.upper()]
    logging.getLogger("stagewise").setLevel(ours)
    root.setLevel(max(logging.WARNING, ours))
    for name in ("uvicorn", "uvicorn.error"):  # uvicorn sets levels of its own
        logging.getLogger(name).setLevel(max(logging.WARNING, ours))


def announce(logger: logging.Logger, message: str, **context: Any) -> None:
    """Tell the operator something the server does (it listens, it stopped): a line on stdout as a person
    reads it, or with `--log-format json` a record like any other, so the output stays one object per line."""
    if _format_in_force == ["json"]:
        logger.info("%s", message, extra=context)
    else:
        print(message, flush=True)


class EventLog:
    """The controller's observer that logs every committed event with its service and delivery."""

    def delivery_changed(self, *, before: Delivery | None, after: Delivery, events: Sequence[Event],
                         now: float) -> None:
        for event in events:
            events_log.log(logging.WARNING if event.kind == "error" else logging.INFO, "%s: %s", after.service,
                           event.message, extra={"service": after.service, "delivery": after.id,
                                                 "kind": event.kind, "phase": after.phase.value})

    def service_events(self, *, service: str, events: Sequence[Event]) -> None:
        for event in events:
            events_log.info("%s: %s", service, event.message, extra={"service": service, "kind": event.kind})

    def pass_finished(self, *, seconds: float) -> None:
        return None

    def reconcile_failed(self, *, service: str, error: StagewiseError, internal: bool) -> None:
        return None  # the controller logs a failure once, when it is news (controller/retries.py)
