"""What a team tells the advisor: its risk profile and the facts of its system.

Levels (`low`, `medium`, `high`) for risk tolerance, system complexity, user
impact and the rollback the team can do; facts that are true, false or not
known (`None`: the advice then neither counts on them nor against them); the
size of the user base; whether the release changes shared data.

They come from command-line flags, or from a file (`--from`): either a
profile — a YAML mapping of the same names in camelCase — or a Service spec,
whose `analysis` templates tell whether live metrics exist, whose `replicas`
size the starter spec, and whose labels `stagewise.dev/<flag-name>` carry the
rest. Mistakes are reported as file:line:column, like a spec's.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from stagewise.core.spec import Model
from stagewise.errors import Problem, SpecError
from stagewise.spec import load_spec_text
from stagewise.spec.messages import describe, problems_from
from stagewise.spec.yamltree import compose_documents

Level = Literal["low", "medium", "high"]
LEVELS: tuple[Level, ...] = ("low", "medium", "high")
LABEL_PREFIX = "stagewise.dev/"


class Inputs(Model):
    risk_tolerance: Level = "medium"
    """How much risk of a bad release reaching users the team accepts."""
    complexity: Level = "medium"
    """How complex the system is: how many ways a release can fail that tests do not show."""
    user_impact: Level = "medium"
    """How much a failure hurts users (high: a critical system)."""
    rollback: Level = "medium"
    """What rollback the team can do by itself (low: slow, manual, rehearsed rarely)."""
    zero_downtime: bool | None = None
    """Users must never see the service down."""
    spare_capacity: bool | None = None
    """There is room for a second full set of instances."""
    metrics: bool | None = None
    """Live metrics exist to judge a candidate against the stable release."""
    users: Annotated[int, Field(ge=1)] | None = None
    """Size of the user base."""
    schema_change: bool = False
    """The release changes shared data (a database schema, a message format)."""
    replicas: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Instances of the service, when known (from a spec): sizes the starter spec."""

    def given(self, name: str) -> str:
        """The input as a person would type it: `--risk-tolerance low`, `--no-metrics`, `--users 1,000,000`."""
        flag = "--" + name.replace("_", "-")
        value = getattr(self, name)
        default = "" if name in self.model_fields_set else " (default)"
        if isinstance(value, bool):
            return (flag if value else "--no-" + flag[2:]) + default
        if isinstance(value, int):
            return f"{flag} {value:,}{default}"
        return f"{flag} {value}{default}"


def load_inputs(path: str | os.PathLike[str]) -> Inputs:
    """Inputs from a profile or a Service spec; `SpecError` with file:line:column when wrong."""
    filename = os.fspath(path)
    try:
        with open(path, "rb") as stream:
            text = stream.read(1 << 20).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpecError([Problem(filename, 1, 1, "", f"cannot read the file: {reason}")]) from exc
    return inputs_from_text(text, filename)


def inputs_from_text(text: str, filename: str = "<inputs>") -> Inputs:
    documents = compose_documents(text, filename)
    if len(documents) != 1 or not isinstance(documents[0].data, dict):
        got = f"{len(documents)} documents" if len(documents) != 1 else describe(documents[0].data)
        raise SpecError([Problem(filename, 1, 1, "", "expected one YAML mapping: a profile (riskTolerance, "
                                 f"complexity, ...) or a Service spec; got {got}")])
    doc = documents[0]
    if doc.data.get("kind") == "Service":
        return _from_service(text, filename)
    try:
        return Inputs.model_validate(doc.data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise SpecError(problems_from(exc, Inputs, doc, filename)) from exc


def _from_service(text: str, filename: str) -> Inputs:
    spec = load_spec_text(text, filename)
    data: dict[str, Any] = {"metrics": bool(spec.spec.analysis) or None, "replicas": spec.spec.replicas}
    problems: list[Problem] = []
    for key, raw in spec.metadata.labels.items():
        if not key.startswith(LABEL_PREFIX):
            continue
        name = key[len(LABEL_PREFIX):].replace("-", "_")
        if name not in Inputs.model_fields or name == "replicas":
            continue
        try:
            data[name] = _label_value(name, raw)
        except ValueError as exc:
            problems.append(Problem(filename, 1, 1, f"metadata.labels.{key}", str(exc)))
    if problems:
        raise SpecError(problems)
    try:
        return Inputs.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        raise SpecError([Problem(filename, 1, 1, "metadata.labels", e["msg"]) for e in exc.errors()]) from exc


def _label_value(name: str, raw: str) -> object:
    """Labels are text: read them as the field's type, or say what is expected."""
    value = raw.strip().lower()
    kind = Inputs.model_fields[name].annotation
    if kind in (bool, bool | None):
        if value in ("true", "yes", "1"):
            return True
        if value in ("false", "no", "0"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if name == "users":
        digits = value.replace(",", "").replace("_", "")
        if digits.isdigit() and int(digits) > 0:
            return int(digits)
        raise ValueError(f"expected a number of users such as 1000000, got {raw!r}")
    if value not in LEVELS:
        raise ValueError(f"expected one of {', '.join(LEVELS)}, got {raw!r}")
    return value
