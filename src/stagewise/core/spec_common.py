"""What every part of the Service spec shares: the model base, durations, analysis references, tagged unions.

A spec's choices are written as YAML keys or fields — `strategy: {canary:
{...}}`, a canary step `- setWeight: 10`, `phased: {waves: [...]}`,
`provider: http` — and read into tagged unions, so that code holding a
`CanaryStrategy` knows it has a canary and needs no check for it. The helpers
here build the discriminators for the two ways a choice is tagged: by the one
key a mapping holds (`by_key`), or by a field's value (`by_field`). When the
input does not name exactly one choice they raise an error of their own type
(`ONE_KEY_ERROR`, `CHOICE_ERROR`) with the choices in its context, which
`stagewise.spec.messages` words for the person who wrote the YAML.

Pure: no I/O; what is valid is stated here and in the spec modules, never in
the loader.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel, to_snake

from stagewise.core.durations import format_duration, parse_duration

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""Seconds; written in specs as `30s`, `5m`, `1h`."""


_HOSTPORT = re.compile(r"(?P<host>[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})")


def check_listen(value: str) -> str:
    match = _HOSTPORT.fullmatch(value)
    if not match or not 0 <= int(match["port"]) <= 65535:
        raise ValueError(f"expected host:port such as 127.0.0.1:8080, got {value!r}")
    return value


Listen = Annotated[str, BeforeValidator(lambda v: check_listen(v) if isinstance(v, str) else v)]
"""A `host:port` to listen on or connect to."""


class Model(BaseModel):
    """Base of spec models: camelCase in YAML, unknown fields rejected, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, strict=True,
        use_attribute_docstrings=True,
    )


# --- tagged unions ------------------------------------------------------------------------

ONE_KEY_ERROR = "one_key_of"
"""Error type: a mapping that must hold exactly one of some keys does not; context `subject`, `keys`
(comma-separated)."""
CHOICE_ERROR = "one_choice_of"
"""Error type: a field names none of the choices; context `field`, `choices` (comma-separated)."""


class _Discriminator(Discriminator):
    """A Discriminator that can stand in a Union (`PhasedSpec | None`): its error context is a dict,
    which leaves the dataclass unhashable; one instance per union, so identity is equality enough."""

    def __hash__(self) -> int:
        return id(self)


def by_key(keys: tuple[str, ...], *, subject: str) -> Any:
    """The discriminator of a union whose members each hold one of `keys` (YAML spelling).

    A key's snake_case field name counts too (models are stored by field name), and a key whose
    value is null counts as absent — `- pause:` alone is the exception the canary step handles.
    """
    names = {key: key for key in keys} | {to_snake(key): key for key in keys}

    def tag(value: Any) -> str | None:
        if isinstance(value, BaseModel):
            return getattr(value, "TAG", None)
        if not isinstance(value, dict):
            return None
        present = {names[k] for k, v in value.items() if k in names and v is not None}
        return present.pop() if len(present) == 1 else None

    return _Discriminator(tag, custom_error_type=ONE_KEY_ERROR,
                         custom_error_message=f"{subject} exactly one of {', '.join(keys)}",
                         custom_error_context={"subject": subject, "keys": ", ".join(keys)})


def without_null_keys(keys: tuple[str, ...]) -> BeforeValidator:
    """Drop `keys` (or their field names) given as null: `{full: , canary: {...}}` is a canary."""
    names = set(keys) | {to_snake(key) for key in keys}

    def drop(value: Any) -> Any:
        if isinstance(value, dict) and any(k in names and v is None for k, v in value.items()):
            return {k: v for k, v in value.items() if not (k in names and v is None)}
        return value

    return BeforeValidator(drop)


def by_field(field: str, choices: tuple[str, ...], *, default: str) -> Any:
    """The discriminator of a union whose members each have `field` set to one of `choices` (or `default`)."""

    def tag(value: Any) -> str | None:
        if isinstance(value, BaseModel):
            chosen = getattr(value, field, None)
        elif isinstance(value, dict):
            chosen = value.get(field, default)
        else:
            return None
        return chosen if isinstance(chosen, str) and chosen in choices else None

    return _Discriminator(tag, custom_error_type=CHOICE_ERROR,
                         custom_error_message=f"{field} is one of {', '.join(choices)}",
                         custom_error_context={"field": field, "choices": ", ".join(choices)})


# --- references to analysis templates -------------------------------------------------------

TEMPLATES_CONTEXT = "analysis_templates"
"""Validation-context key: the template names spec.analysis defines (a frozenset)."""


def undefined_templates(missing: list[str], known: set[str] | frozenset[str]) -> str:
    return (f"analysis template {', '.join(map(repr, missing))} is not defined in spec.analysis"
            + (f" (defined: {', '.join(sorted(known))})" if known else " (none defined)"))


class AnalysisRef(Model):
    templates: Annotated[list[str], Field(min_length=1)]
    """Names of entries in `spec.analysis`."""
    duration: Duration | None = None
    """How long the analysis runs before it can pass; none: until the step or delivery ends."""

    @field_validator("templates")
    @classmethod
    def _defined(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # The spec loader passes the names spec.analysis defines, so that an unknown one is reported
        # here, at the reference; without them ServiceBody checks the same at the end.
        known = (info.context or {}).get(TEMPLATES_CONTEXT)
        if isinstance(known, frozenset):
            missing = [t for t in value if t not in known]
            if missing:
                raise ValueError(undefined_templates(missing, known))
        return value


class BackgroundAnalysis(AnalysisRef):
    starting_step: Annotated[int, Field(ge=0)] = 0
    """Index of the canary step from which the background analysis runs."""

