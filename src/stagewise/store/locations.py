"""Where a store is: reading a `--store` value, and saying it without its password.

`stagewise server --store` and `stagewise store copy --from/--to` take one
string: `sqlite` (the file `stagewise.db` under the state directory, the
default), `sqlite:PATH` (a file, or a directory holding `stagewise.db`), or a
PostgreSQL connection string in any form libpq reads —
`postgresql://USER@HOST:PORT/DB`, `postgres://...`, a Unix socket as
`postgresql:///DB?host=/run/postgresql`, or `host=... dbname=...` keywords.
libpq itself reads the connection string, so its environment (`PGPASSWORD`,
`~/.pgpass`, `PGSSLMODE`, ...) applies as to `psql`.

A connection string may hold a password. It must never reach a log line, an
error message or a status page: everything that shows a location shows
`masked`, and error texts pass through `scrub`. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from stagewise.errors import UnknownDriverError

StoreKind = Literal["sqlite", "postgresql"]

SQLITE_FILE = "stagewise.db"
POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")
FORMS = ["sqlite", "sqlite:PATH", "postgresql://USER@HOST/DB", "postgres://USER@HOST/DB", "host=... dbname=..."]
"""What `--store` accepts, as the error for anything else lists it."""

_KEYWORD = re.compile(r"^\s*\w+\s*=")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
_URL_PASSWORD = re.compile(r"^([a-z]+://[^:/?#@]*:)([^@/?#]*)(@)")
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)")
MASK = "***"


@dataclass(frozen=True)
class StoreLocation:
    kind: StoreKind
    target: str
    """The SQLite file's path, or the PostgreSQL connection string as given (password and all)."""
    secret: str = field(default="", repr=False)
    """The password the connection string holds, if any: what `scrub` removes from messages."""

    @property
    def masked(self) -> str:
        """The location as it may be shown: the password, if any, replaced by ***."""
        return self.target if self.kind == "sqlite" else mask_password(self.target)

    def scrub(self, text: str) -> str:
        """`text` without the password: libpq does not repeat it in its errors, and this makes sure."""
        return text.replace(self.secret, MASK) if self.secret else text

    def __str__(self) -> str:
        return self.masked


def parse_location(value: str, *, state_dir: Path) -> StoreLocation:
    """The store `value` names; `UnknownDriverError` (listing the forms) for anything else."""
    if value == "sqlite":
        return StoreLocation("sqlite", str(state_dir / SQLITE_FILE))
    if value.startswith("sqlite:") and len(value) > len("sqlite:"):
        return StoreLocation("sqlite", str(_sqlite_file(value.removeprefix("sqlite:"))))
    if value.startswith(POSTGRESQL_SCHEMES) or _KEYWORD.match(value):
        return StoreLocation("postgresql", value, password_of(value))
    raise UnknownDriverError("store", mask_password(value), FORMS)


def _sqlite_file(path: str) -> Path:
    """`sqlite:PATH`: the file itself, or `stagewise.db` in it when PATH is a directory (a state directory)."""
    if path.startswith("///"):  # sqlite:///abs/path, as SQLAlchemy writes it
        path = path[2:]
    given = Path(path).expanduser()
    return given / SQLITE_FILE if given.is_dir() or path.endswith("/") else given


def password_of(conninfo: str) -> str:
    """The password written in a connection string ("" when there is none)."""
    if conninfo.startswith(POSTGRESQL_SCHEMES):
        parts = urlsplit(conninfo)
        query = dict(parse_qsl(parts.query))
        return query.get("password") or unquote(parts.password or "")
    found = _KEYWORD_PASSWORD.search(conninfo)
    return found.group(2).strip("'") if found else ""


def mask_password(conninfo: str) -> str:
    """The connection string with its password, in whichever place it is written, replaced by ***."""
    masked = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", conninfo)
    masked = _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", masked)
    return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", masked) if not masked.startswith(POSTGRESQL_SCHEMES) else masked
