"""YAML text → plain Python data, with the position of every key and value kept aside.

Why not `YAML().load()`: a loaded document forgets where its values were written,
and pydantic only knows a path such as `('spec', 'replicas')`. So we let ruamel
*compose* the node graph (which carries marks) and build plain dicts, lists and
scalars ourselves, recording for each path where its key and value sit. Building
it ourselves also lets us say precisely what is wrong with the YAML itself —
duplicate keys with both positions, keys that are not text, foreign tags, alias
cycles and alias bombs — instead of a bare exception from deep inside a parser.

This module must never let an exception other than `SpecError` escape for any
input text, and never hand pydantic a value it could not have meant.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from stagewise.errors import Problem, SpecError

MAX_DEPTH = 64
"""A spec nests about a dozen levels; anything far deeper is a mistake or an attack."""
MAX_VALUES = 100_000
"""Values after aliases are expanded: stops a 'billion laughs' document in its tracks."""

Path = tuple[str | int, ...]
_STD = "tag:yaml.org,2002:"
_AS_TEXT = {_STD + "str", _STD + "timestamp", _STD + "merge", _STD + "value"}


@dataclass(frozen=True)
class Position:
    """A 1-based line and column, the way editors number them."""

    line: int
    column: int


@dataclass(frozen=True)
class Located:
    """Where one value of the document was written."""

    key: Position | None
    """The position of the mapping key that holds the value; None for list items and the root."""
    value: Position
    """Where the value itself starts."""
    text: str | None
    """The scalar as written (before YAML turned `1.10` into 1.1); None for mappings and lists."""
    collection: bool

    @property
    def point(self) -> Position:
        """Where to point a reader: at the key for a mapping or list, or for an empty value."""
        if self.key is not None and (self.collection or self.text == ""):
            return self.key
        return self.value


@dataclass(frozen=True)
class Document:
    """One YAML document as plain data, with an index of where every path was written."""

    data: Any
    where: dict[Path, Located]
    start: Position


def position_of(mark: Any) -> Position:
    """ruamel marks are 0-based; people count from 1."""
    return Position(int(mark.line) + 1, int(mark.column) + 1)


def position_in_text(text: str, index: int) -> Position:
    """The line and column of character `index` of `text`."""
    line_start = text.rfind("\n", 0, index) + 1
    return Position(text.count("\n", 0, index) + 1, index - line_start + 1)


class _QuietComposer(Composer):
    """ruamel warns when an anchor name is reused; YAML allows it, and a warning is no error report."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.warn_double_anchors = False


def compose_documents(text: str, filename: str) -> list[Document]:
    """Every non-empty document of `text`; raises SpecError listing what is wrong."""
    _check_version_directives(text, filename)
    yaml = YAML(typ="safe", pure=True)
    yaml.Composer = _QuietComposer
    yaml.max_depth = MAX_DEPTH
    try:
        roots = list(_roots(yaml, text))
    except YAMLError as exc:
        raise SpecError([_syntax_problem(exc, text, filename)]) from exc
    except RecursionError as exc:  # the composer recurses per level; max_depth should stop it first
        raise SpecError([Problem(filename, 1, 1, "", "the document nests too deeply to read")]) from exc
    except AssertionError as exc:  # ruamel checks some input with assert; none should remain reachable
        raise SpecError([Problem(filename, 1, 1, "", f"the YAML parser refused the file: {exc}")]) from exc
    documents: list[Document] = []
    problems: list[Problem] = []
    for root in roots:
        builder = _Builder(filename)
        data = builder.build_root(root)
        problems += builder.problems
        documents.append(Document(data, builder.where, position_of(root.start_mark)))
    if problems:
        raise SpecError(sorted(problems, key=lambda p: (p.line, p.column)))
    return documents


_VERSION_DIRECTIVE = re.compile(r"^%YAML[ \t]+(\S*)", re.MULTILINE)


def _check_version_directives(text: str, filename: str) -> None:
    """`%YAML 1.3` trips an assert inside ruamel; say what is accepted before it gets there."""
    for match in _VERSION_DIRECTIVE.finditer(text):
        if match[1] not in ("1.1", "1.2"):
            where = position_in_text(text, match.start(1))
            raise SpecError(
                [
                    Problem(
                        filename, where.line, where.column, "",
                        f"YAML version {match[1] or '(none)'} is not supported; write %YAML 1.2 "
                        "(or leave the directive out)",
                    )
                ]
            )


def _roots(yaml: YAML, text: str) -> Iterator[Node]:
    """Document roots, skipping empty documents (a trailing `---` is common and harmless)."""
    for root in yaml.compose_all(text):
        if isinstance(root, ScalarNode) and str(root.tag) == _STD + "null" and root.value in ("", "~"):
            continue
        yield root


def _syntax_problem(exc: YAMLError, text: str, filename: str) -> Problem:
    """Turn a ruamel error into a Problem at its mark, in words a reader can act on."""
    if isinstance(exc, ReaderError):
        where = position_in_text(text, int(exc.position))
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        return Problem(
            filename, where.line, where.column, "",
            f"the character U+{char:04X} is not allowed in YAML; is this a binary file? "
            "A spec is UTF-8 text",
        )
    if isinstance(exc, MaxDepthExceededError) and exc.problem_mark is not None:
        where = position_of(exc.problem_mark)
        return Problem(filename, where.line, where.column, "", f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = position_of(mark) if mark is not None else Position(1, 1)
        what = str(exc.problem or exc.context or "unreadable YAML")
        what = what.replace("'<stream end>'", "the end of the file")
        message = f"YAML syntax error: {what}"
        if exc.context and exc.problem and exc.context_mark is not None:
            context = position_of(exc.context_mark)
            message += f" ({exc.context} at line {context.line}, column {context.column})"
        if "'\\t'" in message:
            message += "; YAML indents with spaces, never tabs"
        return Problem(filename, where.line, where.column, "", message)
    return Problem(filename, 1, 1, "", f"YAML error: {exc}")


class _TooManyValues(Exception):
    """Raised inside the builder to stop expanding an alias bomb at once."""


class _Builder:
    """Builds plain data from one document's nodes and records each path's position."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.where: dict[Path, Located] = {}
        self.problems: list[Problem] = []
        self._budget = MAX_VALUES
        self._open: set[int] = set()  # ids of nodes being built: meeting one again is an alias cycle

    def build_root(self, root: Node) -> Any:
        try:
            return self._build(root, (), None, 0)
        except _TooManyValues:
            # The alias that tipped it over has no mark of its own (it *is* the anchored node).
            self._problem(
                root, f"the document expands to more than {MAX_VALUES} values through aliases (*name)"
            )
            return None

    def _problem(self, node: Node, message: str, path: Path = ()) -> None:
        where = position_of(node.start_mark)
        self.problems.append(Problem(self.filename, where.line, where.column, yaml_path(path), message))

    def _build(self, node: Node, path: Path, key: Position | None, depth: int) -> Any:
        self._budget -= 1
        if self._budget < 0:
            raise _TooManyValues
        if depth > MAX_DEPTH:
            self._problem(node, f"nested more than {MAX_DEPTH} levels deep (through aliases)", path)
            return None
        text = node.value if isinstance(node, ScalarNode) else None
        self.where[path] = Located(key, position_of(node.start_mark), text, not isinstance(node, ScalarNode))
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._open:
            name = f" *{node.anchor}" if getattr(node, "anchor", None) else ""
            self._problem(node, f"the alias{name} refers to a value that contains it (a cycle)", path)
            return None
        tag = str(node.tag)
        if tag not in (_STD + "seq", _STD + "map"):
            self._problem(node, f"the YAML tag {_show_tag(tag)} is not supported in a spec", path)
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self._build(item, (*path, i), None, depth + 1) for i, item in enumerate(node.value)]
            assert isinstance(node, MappingNode)
            return self._mapping(node, path, depth)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: MappingNode, path: Path, depth: int) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        explicit: dict[str, Any] = {}
        first_seen: dict[str, Position] = {}
        own = self.where[path]
        for key_node, value_node in node.value:
            if _is_merge_key(key_node):
                merged.update(self._merge_sources(value_node, path, depth))
        self.where[path] = own  # building a merge source recorded its own place under this path
        for key_node, value_node in node.value:
            if _is_merge_key(key_node):
                continue
            name = self._key(key_node, path)
            if name is None:
                continue
            at = position_of(key_node.start_mark)
            if name in first_seen:
                first = first_seen[name]
                self._problem(
                    key_node,
                    f"duplicate key {name!r}: first at line {first.line}, column {first.column}, "
                    f"again at line {at.line}, column {at.column}; a key may appear once in a mapping",
                    path,
                )
                continue
            first_seen[name] = at
            explicit[name] = self._build(value_node, (*path, name), at, depth + 1)
        return {**merged, **explicit}

    def _merge_sources(self, source: Node, path: Path, depth: int) -> dict[str, Any]:
        """`<<: *base` or `<<: [*a, *b]`; earlier sources win, as YAML's merge key says."""
        sources = list(reversed(source.value)) if isinstance(source, SequenceNode) else [source]
        merged: dict[str, Any] = {}
        for each in sources:
            if not isinstance(each, MappingNode):
                self._problem(each, "'<<' merges a mapping or a list of mappings into this one", path)
                continue
            value = self._build(each, path, None, depth)
            if isinstance(value, dict):
                merged.update(value)
        return merged

    def _key(self, node: Node, path: Path) -> str | None:
        """A mapping key as text, or None after recording why it is not usable."""
        if not isinstance(node, ScalarNode):
            kind = "a list" if isinstance(node, SequenceNode) else "a mapping"
            self._problem(node, f"a key must be text, not {kind}", path)
            return None
        before = len(self.problems)
        value = self._scalar(node, path)
        if isinstance(value, str):
            return value
        if len(self.problems) == before:  # else _scalar has said what is wrong already
            if node.value == "":
                self._problem(node, "a key is missing before ':'", path)
            else:
                quoted = f"put it in quotes: '{node.value}'"
                self._problem(node, f"a key must be text, got {node.value}; {quoted}", path)
        return None

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        tag, text = str(node.tag), str(node.value)
        try:
            if tag in _AS_TEXT:
                return text  # dates and the like stay as written: a spec has no use for datetimes
            if tag == _STD + "null":
                return None
            if tag == _STD + "bool":
                return _to_bool(text)
            if tag == _STD + "int":
                return _to_int(text)
            if tag == _STD + "float":
                return _to_float(text)
        except ValueError as exc:
            shown = text if len(text) <= 40 else text[:37] + "..."
            self._problem(node, f"cannot read {shown!r} as {exc}", path)
            return None
        self._problem(node, f"the YAML tag {_show_tag(tag)} is not supported in a spec", path)
        return None


def _is_merge_key(node: Node) -> bool:
    return isinstance(node, ScalarNode) and str(node.tag) == _STD + "merge"


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_STD):] if tag.startswith(_STD) else tag


# Scalars by the YAML core schema. Written here rather than borrowed from ruamel's
# constructor so that a bad scalar becomes a ValueError we can word, never a
# KeyError, IndexError or warning from its internals.
_TRUE = {"true", "yes", "y", "on"}
_FALSE = {"false", "no", "n", "off"}


def _to_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    raise ValueError("true or false")


_INT_DIGITS = {2: re.compile(r"[01]+"), 8: re.compile(r"[0-7]+"), 10: re.compile(r"[0-9]+"),
               16: re.compile(r"[0-9a-fA-F]+")}


def _to_int(text: str) -> int:
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    if digits[:1] in ("+", "-"):
        digits = digits[1:]
    base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2].lower(), 10)
    body = digits if base == 10 else digits[2:]
    if not _INT_DIGITS[base].fullmatch(body):  # int() alone would also take ' 5', '-5' and '٣'
        raise ValueError("a whole number")
    try:
        return sign * int(body, base)
    except ValueError:  # more digits than Python converts (sys.int_info.default_max_str_digits)
        raise ValueError("a whole number") from None


def _to_float(text: str) -> float:
    lowered = text.replace("_", "").lower()
    specials = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    if lowered in specials:
        return specials[lowered]
    try:
        return float(lowered)
    except ValueError:
        raise ValueError("a number") from None


def yaml_path(path: Path) -> str:
    """A path as YAML readers spell it: `spec.strategy.canary.steps[2].setWeight`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.replace("-", "").replace("_", "").isalnum():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out
