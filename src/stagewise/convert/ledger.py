"""What became of every field of the input: mapped, or not mapped and why, at file:line:column.

A converter that drops a field silently has lied to its user. So every leaf of
every input document (a scalar, or an empty mapping or list) is accounted for:
the converters mark the paths they carried over (`mapped`) and the paths they
could not (`dropped`, with the reason); a mark on a mapping covers everything
under it, and the most specific mark wins. Whatever no converter marked is
reported at the end as a field stagewise does not know — never lost.

`Note`s also carry remarks on fields that were mapped with a caveat (a strict
`>` read as `>=`, a default that differs). Positions come from the spec
layer's YAML reader, so they are the ones `stagewise validate` would give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from stagewise.spec.yamltree import Document, Path, Position, yaml_path

UNKNOWN_FIELD = "stagewise does not know this field"


@dataclass(frozen=True)
class Note:
    """One remark on the input: a field not mapped (and why), or a caveat on one that was."""

    file: str
    line: int
    column: int
    field: str
    message: str
    mapped: bool
    """False: the field is not in the output. True: it is, with the caveat in `message`."""

    def __str__(self) -> str:
        field = f" {self.field}:" if self.field else ""
        return f"{self.file}:{self.line}:{self.column}:{field} {self.message}"


@dataclass(frozen=True)
class Tally:
    """Fields of one input file: how many leaves were mapped, how many not."""

    mapped: int
    not_mapped: int


def as_list(value: Any) -> list[Any]:
    """`value` when it is a list, else an empty one (a malformed field is reported by whoever reads it)."""
    return value if isinstance(value, list) else []


def is_number(value: Any) -> TypeGuard[int | float]:
    """Whether `value` is a finite number (YAML's booleans are ints to Python, and not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a mapping, else an empty one."""
    return value if isinstance(value, dict) else {}


class Ledger:
    """The account of one input document."""

    def __init__(self, filename: str, doc: Document) -> None:
        self.filename = filename
        self.doc = doc
        self._marks: dict[Path, bool] = {}
        self._reasons: dict[Path, str] = {}
        self._caveats: list[tuple[Path, str]] = []

    @property
    def data(self) -> Any:
        return self.doc.data

    def mapped(self, *paths: Path) -> None:
        """These fields (and everything under them) are carried into the output."""
        for path in paths:
            self._marks[path] = True

    def dropped(self, path: Path, reason: str) -> None:
        """This field (and everything under it) is not in the output, for `reason`."""
        self._marks[path] = False
        self._reasons[path] = reason

    def caveat(self, path: Path, message: str) -> None:
        """A remark on a field that was mapped: how the output differs from what the input meant (once)."""
        if (path, message) not in self._caveats:
            self._caveats.append((path, message))

    def get(self, path: Path) -> Any:
        """The value at `path`, or None when the document has none there."""
        value = self.doc.data
        for part in path:
            found = (isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value)) or (
                isinstance(part, str) and isinstance(value, dict) and part in value)
            if found:
                value = value[part]
            else:
                return None
        return value

    def position(self, path: Path) -> Position:
        """Where to point at `path`: its key, or the nearest written ancestor."""
        for end in range(len(path), -1, -1):
            located = self.doc.where.get(path[:end])
            if located is not None:
                return located.key or located.value
        return self.doc.start

    def note_at(self, path: Path, message: str, *, mapped: bool) -> Note:
        where = self.position(path)
        return Note(self.filename, where.line, where.column, yaml_path(path), message, mapped)

    def _status(self, leaf: Path) -> tuple[bool, Path] | None:
        for end in range(len(leaf), -1, -1):
            if leaf[:end] in self._marks:
                return self._marks[leaf[:end]], leaf[:end]
        return None

    def close(self) -> tuple[Tally, list[Note]]:
        """Count every leaf; report unmarked ones as unknown fields; the notes in the order of the input."""
        mapped = not_mapped = 0
        unknown: list[Path] = []
        for leaf in _leaves(self.doc.data, ()):
            status = self._status(leaf)
            if status is None:
                unknown.append(leaf)
                not_mapped += 1
            elif status[0]:
                mapped += 1
            else:
                not_mapped += 1
        for leaf in unknown:
            self.dropped(leaf, UNKNOWN_FIELD)
        notes = [self.note_at(p, self._reasons[p], mapped=False) for p, ok in self._marks.items() if not ok]
        notes += [self.note_at(p, m, mapped=True) for p, m in self._caveats]
        notes.sort(key=lambda n: (n.line, n.column, n.mapped))
        return Tally(mapped, not_mapped), notes


def _leaves(value: Any, path: Path) -> list[Path]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(value, list) and value:
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*path, i))]
    return [path]


__all__ = ["UNKNOWN_FIELD", "Ledger", "Note", "Tally", "as_dict", "as_list"]
