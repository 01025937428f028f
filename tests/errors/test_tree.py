"""Every exception stagewise raises lives in `stagewise.errors`, each drawn in the tree of its docstring."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import stagewise.errors as errors

SRC = Path(errors.__file__).parent
PRIVATE_SIGNALS = {"_TooManyValues", "_BadRequest", "_StaleConnection"}
"""Signals raised and caught inside one module (two of them in example programs that import nothing of
stagewise): they never leave it, so they are no part of the tree."""


def exception_classes() -> dict[str, type[BaseException]]:
    return {name: cls for name, cls in vars(errors).items()
            if inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == errors.__name__}


def test_each_error_is_drawn_under_its_parent_in_the_tree() -> None:
    doc = errors.__doc__ or ""
    lines = [line for line in doc.splitlines() if re.search(r"[├└]── |^\s+StagewiseError\s*$", line)]
    drawn: dict[str, int] = {}
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in lines:
        match = re.match(r"^(?P<indent>[\s│]*)(?:[├└]── )?(?P<name>\w+)", line)
        assert match is not None, line
        depth = match.start("name")
        name = match["name"]
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
        drawn[name] = depth
    classes = exception_classes()
    assert set(drawn) == set(classes), "drawn but not defined, or defined but not drawn"
    for name, cls in classes.items():
        if name != "StagewiseError":
            assert cls.__mro__[1].__name__ == parents[name], f"{name} is drawn under {parents[name]}"


def test_no_exception_class_is_defined_outside_errors() -> None:
    elsewhere = []
    for path in SRC.rglob("*.py"):
        if path == Path(errors.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name not in PRIVATE_SIGNALS and any(
                    re.search(r"(Error|Exception)$", ast.unparse(base)) for base in node.bases):
                elsewhere.append(f"{path.relative_to(SRC)}: {node.name}")
    assert elsewhere == []


def test_names_are_distinct_and_say_error() -> None:
    names = list(exception_classes())
    assert len(names) == len(set(names))
    assert all(name.endswith("Error") for name in names)
