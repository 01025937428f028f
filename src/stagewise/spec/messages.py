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
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from stagewise.errors import Problem
from stagewise.spec.yamltree import Document, Located, Path, yaml_path


def problems_from(exc: ValidationError, root: type[BaseModel], doc: Document, filename: str) -> list[Problem]:
    """One Problem per pydantic error, at the YAML position the error's path leads to."""
    problems = {_problem(error, root, doc, filename) for error in exc.errors()}
    return sorted(problems, key=lambda p: (p.line, p.column, p.field, p.message))


def _problem(error: ErrorDetails, root: type[BaseModel], doc: Document, filename: str) -> Problem:
    loc: Path = tuple(error["loc"])
    kind = error["type"]
    if kind == "missing":
        where = _locate(doc, loc[:-1]).point
        message = _missing(root, loc)
        return Problem(filename, where.line, where.column, yaml_path(loc[:-1]), message)
    if kind == "extra_forbidden":
        found = doc.where.get(loc)
        where = found.key if found and found.key else _locate(doc, loc[:-1]).point
        return Problem(filename, where.line, where.column, yaml_path(loc[:-1]), _unknown_field(root, loc))
    located = _locate(doc, loc)
    where = located.point
    return Problem(filename, where.line, where.column, yaml_path(loc), _wrong_value(error, root, located))


def _locate(doc: Document, loc: Path) -> Located:
    """The deepest recorded position on `loc`: pydantic may add steps YAML has no place for."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in doc.where:
            return doc.where[loc[:end]]
    return doc.where.get((), Located(None, doc.start, None, True))


def _missing(root: type[BaseModel], loc: Path) -> str:
    name = str(loc[-1])
    message = f"missing required field {name!r}"
    field = _fields(_types_at(root, loc[:-1])).get(name)
    if field is not None and field.description:
        message += f" ({field.description.rstrip('.')})"
    return message


def _unknown_field(root: type[BaseModel], loc: Path) -> str:
    name = str(loc[-1])
    valid = list(_fields(_types_at(root, loc[:-1])))
    message = f"unknown field {name!r}"
    guess = _closest(name, valid)
    if guess:
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


def _wrong_value(error: ErrorDetails, root: type[BaseModel], located: Located) -> str:
    kind, ctx, value = error["type"], error.get("ctx", {}), error["input"]
    got = describe(value)
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        choices = _literal_choices(_types_at(root, tuple(error["loc"])))
        return _not_a_choice(value, choices, str(ctx.get("expected", "")))
    if kind == "string_type":
        hint = ""
        if located.text and isinstance(value, int | float):
            hint = f"; put it in quotes (\"{located.text}\") to keep it as text"
        return f"expected text, got {got}{hint}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        fields = list(_fields(_types_at(root, tuple(error["loc"]))))
        shape = f"a mapping with fields {', '.join(fields)}" if fields else "a mapping (key: value)"
        hint = "; write {} for an empty mapping" if value is None else ""
        return f"expected {shape}, got {got}{hint}"
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

def _types_at(root: type[BaseModel], loc: Path) -> list[Any]:
    """The candidate types at `loc` inside `root` (several where a Union allows)."""
    current: list[Any] = [root]
    for part in loc:
        following: list[Any] = []
        for tp in _flatten(current):
            origin = get_origin(tp)
            if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
                field = _fields([tp]).get(part)
                if field is not None:
                    following.append(field.annotation)
            elif origin is dict and isinstance(part, str):
                following.append(get_args(tp)[1])
            elif origin is list and isinstance(part, int):
                following.append(get_args(tp)[0])
        if not following:
            return []
        current = following
    return _flatten(current)


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
    """The fields of the first model among `types_`, by their YAML (alias) name."""
    for tp in types_:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return {(info.alias or name): info for name, info in tp.model_fields.items()}
    return {}


def _literal_choices(types_: list[Any]) -> list[str]:
    return [str(arg) for tp in types_ if get_origin(tp) is Literal for arg in get_args(tp)]

