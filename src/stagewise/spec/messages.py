"""Pydantic's validation errors, reworded for the person who wrote the YAML.

Pydantic says `Input should be greater than or equal to 0` at `('spec', 'strategy',
'canary', 'steps', 1, 'setWeight')`. A user needs the line and column, the field
in YAML spelling, what was wrong and what would be right — the valid choices of
an enum, the valid fields of a mapping and the nearest one to a typo. This
module only words errors: it decides nothing about what is valid (core/spec.py
does) and reads no files.
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Discriminator, Tag, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from stagewise.core.spec_common import CHOICE_ERROR, ONE_KEY_ERROR
from stagewise.errors import Problem
from stagewise.spec.yamltree import Document, Located, Path, yaml_path


def problems_from(exc: ValidationError, root: type[BaseModel], doc: Document, filename: str) -> list[Problem]:
    """One Problem per pydantic error, at the YAML position the error's path leads to."""
    walks = [(_walk(root, tuple(error["loc"])), error) for error in exc.errors()]
    # "missing 'blueGreen'" beside "unknown field 'blue_green'; did you mean 'blueGreen'?" says nothing more
    suggested = {(w.loc[:-1], _closest(str(w.loc[-1]), list(_fields(w.at(w.loc[:-1])))))
                 for w, error in walks if error["type"] == "extra_forbidden"}
    problems = {problem for w, error in walks
                if not (error["type"] == "missing" and (w.loc[:-1], w.loc[-1]) in suggested)
                for problem in _problems(error, w, doc, filename)}
    return sorted(problems, key=lambda p: (p.line, p.column, p.field, p.message))


@dataclass(frozen=True)
class _Walk:
    """An error's path in YAML spelling (the tags of tagged unions left out), and the types along it."""

    loc: Path
    types: dict[Path, list[Any]]
    """YAML path → the shapes a value there may have."""
    kinds: dict[Path, tuple[str, str, dict[str, Any]]]
    """YAML path of a mapping whose kind a field picked → (that field, the kind picked, every kind)."""

    def at(self, loc: Path) -> list[Any]:
        return self.types.get(loc, [])


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> _Walk:
    current: list[Any] = [root]
    out: list[str | int] = []
    types: dict[Path, list[Any]] = {(): _flatten(current)}
    kinds: dict[Path, tuple[str, str, dict[str, Any]]] = {}
    for part in loc:
        members, field = _tagged(current)
        if isinstance(part, str) and part in members:
            # a tag pydantic adds to the path: a kind picked by a field has only its own fields;
            # a choice made by a key (a strategy, a canary step) keeps every choice's key valid beside it
            if field is not None:
                current = [members[part]]
                kinds[tuple(out)] = (field, part, members)
            else:
                current = list(members.values())
            types[tuple(out)] = _flatten(current)
            continue
        out.append(part)
        current = _step(current, part)
        types[tuple(out)] = _flatten(current)
    return _Walk(tuple(out), types, kinds)


def _problems(error: ErrorDetails, walk: _Walk, doc: Document, filename: str) -> list[Problem]:
    kind, loc = error["type"], walk.loc
    if kind == ONE_KEY_ERROR:
        return _not_one_key(error, walk, doc, filename)
    if kind == CHOICE_ERROR:
        return [_not_a_listed_choice(error, walk, doc, filename)]
    if kind == "missing":
        where = _locate(doc, loc[:-1]).point
        return [Problem(filename, where.line, where.column, yaml_path(loc[:-1]), _missing(walk))]
    if kind == "extra_forbidden":
        return [_unknown(walk, loc, doc, filename)]
    located = _locate(doc, loc)
    where = located.point
    return [Problem(filename, where.line, where.column, yaml_path(loc), _wrong_value(error, walk, located))]


def _unknown(walk: _Walk, loc: Path, doc: Document, filename: str) -> Problem:
    found = doc.where.get(loc)
    where = found.key if found and found.key else _locate(doc, loc[:-1]).point
    return Problem(filename, where.line, where.column, yaml_path(loc[:-1]), _unknown_field(walk, loc))


def _not_one_key(error: ErrorDetails, walk: _Walk, doc: Document, filename: str) -> list[Problem]:
    """A mapping that must name exactly one choice by its key (a strategy, a canary step) does not."""
    ctx, value, loc = error.get("ctx", {}), error["input"], walk.loc
    keys = str(ctx.get("keys", "")).split(", ")
    where = _locate(doc, loc).point
    if not isinstance(value, dict):
        return [Problem(filename, where.line, where.column, yaml_path(loc), _expected_mapping(walk, value))]
    given = [str(k) for k, v in value.items() if v is not None and (k in keys or to_camel(str(k)) in keys)]
    fields = _fields(walk.at(loc))
    unknown = [k for k in value if k not in fields]
    if not given and unknown:
        return [_unknown(walk, (*loc, k), doc, filename) for k in unknown]
    message = f"{ctx.get('subject', 'this mapping takes')} exactly one of {_one_of(keys)}"
    if given:
        message += f"; got {' and '.join(given)}"
    return [Problem(filename, where.line, where.column, yaml_path(loc), message)]


def _not_a_listed_choice(error: ErrorDetails, walk: _Walk, doc: Document, filename: str) -> Problem:
    """A field that picks the kind of a mapping (an analysis template's provider) names none of the kinds."""
    ctx, value, loc = error.get("ctx", {}), error["input"], walk.loc
    if not isinstance(value, dict):
        where = _locate(doc, loc).point
        return Problem(filename, where.line, where.column, yaml_path(loc), _expected_mapping(walk, value))
    field = str(ctx.get("field", ""))
    at = (*loc, field)
    where = _locate(doc, at).point
    choices = str(ctx.get("choices", "")).split(", ")
    return Problem(filename, where.line, where.column, yaml_path(at), _not_a_choice(value.get(field), choices, ""))


def _one_of(keys: list[str]) -> str:
    return " or ".join(keys) if len(keys) == 2 else ", ".join(keys)


def _expected_mapping(walk: _Walk, value: Any) -> str:
    fields = list(_fields(walk.at(walk.loc)))
    shape = f"a mapping with fields {', '.join(fields)}" if fields else "a mapping (key: value)"
    hint = "; write {} for an empty mapping" if value is None else ""
    return f"expected {shape}, got {describe(value)}{hint}"


def _locate(doc: Document, loc: Path) -> Located:
    """The deepest recorded position on `loc`: pydantic may add steps YAML has no place for."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in doc.where:
            return doc.where[loc[:end]]
    return doc.where.get((), Located(None, doc.start, None, True))


def _missing(walk: _Walk) -> str:
    name = str(walk.loc[-1])
    message = f"missing required field {name!r}"
    field = _fields(walk.at(walk.loc[:-1])).get(name)
    if field is not None and field.description:
        message += f" ({field.description.rstrip('.')})"
    return message


def _unknown_field(walk: _Walk, loc: Path) -> str:
    name = str(loc[-1])
    valid = list(_fields(walk.at(loc[:-1])))
    message = f"unknown field {name!r}"
    picked = walk.kinds.get(loc[:-1])
    owners = [tag for tag, member in picked[2].items() if name in _fields([member])] if picked else []
    guess = _closest(name, valid)
    if picked and owners:
        message += f" for {picked[0]} {picked[1]}; it goes with {picked[0]}: {' or '.join(owners)}"
    elif guess:
        message += f"; did you mean {guess!r}?"
    if valid:
        message += f" (valid fields here: {', '.join(valid)})"
    else:
        message += " (this mapping takes no fields)"
    return message


def _closest(word: str, choices: list[str]) -> str | None:
    """The nearest choice: exact up to case and snake_case first, then difflib's pick."""
    folded = {c.lower(): c for c in choices}
    if to_camel(word).lower() in folded:
        return folded[to_camel(word).lower()]
    match = difflib.get_close_matches(word.lower(), list(folded), n=1, cutoff=0.6)
    return folded[match[0]] if match else None


def _wrong_value(error: ErrorDetails, walk: _Walk, located: Located) -> str:
    kind, ctx, value = error["type"], error.get("ctx", {}), error["input"]
    got = describe(value)
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        choices = _literal_choices(walk.at(walk.loc))
        return _not_a_choice(value, choices, str(ctx.get("expected", "")))
    if kind == "string_type":
        hint = ""
        if located.text and isinstance(value, int | float):
            hint = f"; put it in quotes (\"{located.text}\") to keep it as text"
        return f"expected text, got {got}{hint}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return _expected_mapping(walk, value)
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"expected a number {words} {_number(ctx.get(key))}, got {got}"
    if kind in ("too_short", "too_long"):
        words, key = ("at least", "min_length") if kind == "too_short" else ("at most", "max_length")
        count = ctx.get(key)
        return f"expected {words} {count} item{'s' if count != 1 else ''}, got {got}"
    if kind in ("string_too_short", "string_too_long"):
        words, key = ("at least", "min_length") if kind == "string_too_short" else ("at most", "max_length")
        count = ctx.get(key)
        return f"expected {words} {count} character{'s' if count != 1 else ''}, got {got}"
    if kind == "string_pattern_mismatch":
        return f"expected text matching {ctx.get('pattern')}, got {got}"
    plain = {
        "int_type": "a whole number",
        "int_parsing": "a whole number",
        "int_from_float": "a whole number",
        "float_type": "a number",
        "float_parsing": "a number",
        "finite_number": "a finite number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "list_type": "a list such as [a, b] or one '- item' per line",
    }
    if kind in plain:
        return f"expected {plain[kind]}, got {got}"
    message = error["msg"]
    return f"{message[:1].lower()}{message[1:]}, got {got}"


def _not_a_choice(value: Any, choices: list[str], expected: str) -> str:
    if not choices:
        return f"expected {expected}, got {describe(value)}"
    listed = ", ".join(repr(c) for c in choices)
    message = f"expected {listed}" if len(choices) == 1 else f"expected one of {listed}"
    message += f", got {describe(value)}"
    guess = _closest(str(value), choices) if isinstance(value, str) and len(choices) > 1 else None
    if guess and guess != value:
        message += f"; did you mean {guess!r}?"
    return message


def describe(value: Any) -> str:
    """A value in the words of the YAML it came from."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {_number(value)}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the text {shown!r}" if value else "empty text"
    if isinstance(value, list):
        return f"a list of {len(value)}" if value else "an empty list"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    return type(value).__name__


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


# Walking the model's type annotations along an error's path tells us the
# mapping's valid fields and an enum's valid choices without repeating them here.

def _tagged(types_: list[Any]) -> tuple[dict[str, Any], str | None]:
    """The members, by tag, of a tagged union among `types_`; and the field that picks one, if a field does."""
    for tp in types_:
        field = None
        while get_origin(tp) is Annotated:
            for meta in tp.__metadata__:
                if isinstance(meta, Discriminator) and meta.custom_error_type == CHOICE_ERROR:
                    field = str((meta.custom_error_context or {}).get("field"))
            tp = get_args(tp)[0]
        if get_origin(tp) is not Union and get_origin(tp) is not types.UnionType:
            continue
        members = {meta.tag: get_args(arg)[0] for arg in get_args(tp) if get_origin(arg) is Annotated
                   for meta in arg.__metadata__ if isinstance(meta, Tag)}
        if members:
            return members, field
    return {}, None


def _step(current: list[Any], part: str | int) -> list[Any]:
    """The shapes one step down `part` from the shapes `current`."""
    following: list[Any] = []
    for tp in _flatten(current):
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            field = _fields([tp]).get(part)
            if field is not None:  # with its metadata: a tagged union's discriminator sits there
                annotation = field.annotation
                following.append(Annotated.__class_getitem__((annotation, *field.metadata))  # type: ignore[attr-defined]
                                 if field.metadata else annotation)
        elif origin is dict and isinstance(part, str):
            following.append(get_args(tp)[1])
        elif origin is list and isinstance(part, int):
            following.append(get_args(tp)[0])
    return following


def _flatten(types_: list[Any]) -> list[Any]:
    """Strip Annotated and Optional, open Unions; what remains are concrete shapes."""
    out: list[Any] = []
    for tp in types_:
        origin = get_origin(tp)
        if origin is Annotated:
            out += _flatten([get_args(tp)[0]])
        elif origin is Union or origin is types.UnionType:
            out += _flatten([arg for arg in get_args(tp) if arg is not type(None)])
        else:
            out.append(tp)
    return out


def _fields(types_: list[Any]) -> dict[str, Any]:
    """The fields of the models among `types_` (every member of a union), by their YAML (alias) name."""
    fields: dict[str, Any] = {}
    for tp in types_:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            for name, info in tp.model_fields.items():
                fields.setdefault(info.alias or name, info)
    return fields


def _literal_choices(types_: list[Any]) -> list[str]:
    choices = [str(arg) for tp in types_ if get_origin(tp) is Literal for arg in get_args(tp)]
    return list(dict.fromkeys(choices))

