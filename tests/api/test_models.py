"""The API's bounds agree with the rules they stand for."""

from __future__ import annotations

from typing import Annotated

from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError

from stagewise.api.models import NAME_PATTERN
from stagewise.core.spec import Metadata

# Validated as FastAPI validates a path parameter: pydantic's regex engine, not Python's `re`.
api_name = TypeAdapter(Annotated[str, Field(pattern=NAME_PATTERN)])


def api_takes(name: str) -> bool:
    try:
        api_name.validate_python(name)
    except ValidationError:
        return False
    return True


def spec_takes(name: str) -> bool:
    try:
        Metadata(name=name)
    except ValidationError:
        return False
    return True


@given(st.text(alphabet="ab09-_A.\n ", max_size=70) | st.from_regex(NAME_PATTERN, fullmatch=True))
@example("a" * 63)
@example("a" * 64)
@example("shop\n")
@example("-shop")
def test_a_path_takes_exactly_the_names_a_spec_takes(name: str) -> None:
    assert api_takes(name) == spec_takes(name), repr(name)
