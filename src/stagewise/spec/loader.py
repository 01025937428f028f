"""Read Service specs from YAML files: bytes → text → YAML → validated models.

Every way a spec can be wrong — a missing file, a megabyte of noise, a byte that
is not UTF-8, a tab in the indentation, a typo in a field name, a canary weight
of 120 — ends as one `SpecError` whose problems each name file:line:column, the
field in YAML spelling, and what would be right. A user never sees a traceback
for bad input (docs/architecture.md, Errors), so nothing else may escape from here.

What is valid is decided by `stagewise.core.spec` alone; this module only
reads, locates and reports.
"""

from __future__ import annotations

import codecs
import os
from typing import Any

from pydantic import ValidationError

from stagewise.core.gates_spec import WindowsFile
from stagewise.core.pipeline import PipelineSpec
from stagewise.core.spec import TEMPLATES_CONTEXT, ServiceSpec
from stagewise.errors import Problem, SpecError
from stagewise.spec.messages import describe, problems_from
from stagewise.spec.yamltree import Document, compose_documents

MAX_BYTES = 1 << 20
"""Specs are a few kilobytes; a larger file is the wrong file, and parsing it would only be slow."""

StrPath = str | os.PathLike[str]


Spec = ServiceSpec | PipelineSpec
"""A document `stagewise apply` takes: a Service or a Pipeline."""
_MODELS: dict[str, type[ServiceSpec] | type[PipelineSpec] | type[WindowsFile]] = {
    "Service": ServiceSpec, "Pipeline": PipelineSpec, "Windows": WindowsFile,
}
_APPLIED = ("Service", "Pipeline")


def load_specs(path: StrPath) -> list[ServiceSpec]:
    """Every Service spec in the file at `path` (YAML documents separated by `---`)."""
    filename = os.fspath(path)
    return _validate_all(_documents(_read(path, filename), filename), filename)


def load_documents(path: StrPath) -> list[Spec]:
    """Every Service or Pipeline spec in the file at `path`, in order."""
    filename = os.fspath(path)
    out: list[Spec] = []
    for doc in _checked(_documents(_read(path, filename), filename), filename, _APPLIED):
        spec = _typed(doc, filename, _APPLIED)
        assert not isinstance(spec, WindowsFile)  # only Service and Pipeline documents pass `_APPLIED`
        out.append(spec)
    return out


def load_document_text(text: str, filename: str = "<string>") -> Spec:
    """The one Service or Pipeline spec in `text`."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise _too_large(filename)
    documents = _documents_from_text(text, filename)
    _one(documents, filename, "spec")
    spec = _typed(_checked(documents, filename, _APPLIED)[0], filename, _APPLIED)
    assert not isinstance(spec, WindowsFile)  # only Service and Pipeline documents pass `_APPLIED`
    return spec


def load_windows(path: StrPath) -> WindowsFile:
    """The one `kind: Windows` document in the file at `path` (the server's shared freeze windows)."""
    filename = os.fspath(path)
    documents = _documents(_read(path, filename), filename)
    _one(documents, filename, "Windows document")
    result = _typed(_checked(documents, filename, ("Windows",))[0], filename, ("Windows",))
    assert isinstance(result, WindowsFile)
    return result


def _one(documents: list[Document], filename: str, what: str) -> None:
    if len(documents) > 1:
        second = documents[1].start
        raise SpecError([Problem(filename, second.line, second.column, "",
                                 f"expected exactly one {what}, but the file holds {len(documents)} "
                                 "YAML documents (separated by ---)")])


def _checked(documents: list[Document], filename: str, kinds: tuple[str, ...]) -> list[Document]:
    """The documents, once every one is valid; the problems of all of them together otherwise."""
    problems: list[Problem] = []
    for doc in documents:
        try:
            _typed(doc, filename, kinds)
        except SpecError as exc:
            problems += exc.problems
    if problems:
        raise SpecError(problems)
    return documents


def _typed(doc: Document, filename: str, kinds: tuple[str, ...]) -> ServiceSpec | PipelineSpec | WindowsFile:
    """`doc` validated as the model its `kind` names (one of `kinds`); anything else is read as a Service."""
    kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
    if isinstance(kind, str) and kind in _MODELS and kind not in kinds:
        located = doc.where.get(("kind",))
        at = located.value if located is not None else doc.start
        raise SpecError([Problem(filename, at.line, at.column, "kind",
                                 f"expected kind {' or '.join(kinds)} here, got {kind!r}")])
    if kind == "Service" or not isinstance(kind, str) or kind not in _MODELS:
        return _validate(doc, filename)
    model = _MODELS[kind]
    try:
        return model.model_validate(doc.data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise SpecError(problems_from(exc, model, doc, filename)) from exc


def load_spec(path: StrPath) -> ServiceSpec:
    """The one Service spec in the file at `path`; a file holding several is an error."""
    filename = os.fspath(path)
    return _only_one(_documents(_read(path, filename), filename), filename)


def load_spec_text(text: str | bytes, filename: str = "<string>") -> ServiceSpec:
    """The one Service spec in `text`; `filename` only names the source in errors."""
    if isinstance(text, bytes):
        return _only_one(_documents(text, filename), filename)
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise _too_large(filename)
    return _only_one(_documents_from_text(text, filename), filename)


def _read(path: StrPath, filename: str) -> bytes:
    """The file's bytes, at most one past the limit so that /dev/zero cannot hang us."""
    try:
        with open(path, "rb") as stream:
            return stream.read(MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise _at_start(filename, "cannot read the spec: the file does not exist") from exc
    except IsADirectoryError as exc:
        raise _at_start(filename, "cannot read the spec: this is a directory, not a file") from exc
    except PermissionError as exc:
        raise _at_start(filename, "cannot read the spec: permission denied") from exc
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL byte in it
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _at_start(filename, f"cannot read the spec: {reason}") from exc


def _documents(raw: bytes, filename: str) -> list[Document]:
    return _documents_from_text(_decode(raw, filename), filename)


def _decode(raw: bytes, filename: str) -> str:
    """UTF-8 text, or a SpecError at the line and column of the first byte that is not."""
    if len(raw) > MAX_BYTES:
        raise _too_large(filename)
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise _at_start(filename, "the file is UTF-32; save it as UTF-8")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _at_start(filename, "the file is UTF-16; save it as UTF-8")
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The bytes before the bad one decode cleanly, so columns count characters as editors do.
        line = raw.count(b"\n", 0, exc.start) + 1
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8")) + 1
        raise SpecError(
            [
                Problem(
                    filename, line, column, "",
                    f"byte 0x{raw[exc.start]:02X} is not valid UTF-8; is this a binary file? "
                    "A spec is UTF-8 text",
                )
            ]
        ) from exc


def _documents_from_text(text: str, filename: str) -> list[Document]:
    documents = compose_documents(text, filename)
    if not documents:
        raise _at_start(filename, "the file is empty; expected a Service spec")
    return documents


def _only_one(documents: list[Document], filename: str) -> ServiceSpec:
    if len(documents) > 1:
        second = documents[1].start
        raise SpecError(
            [
                Problem(
                    filename, second.line, second.column, "",
                    f"expected exactly one Service spec, but the file holds {len(documents)} "
                    "YAML documents (separated by ---)",
                )
            ]
        )
    return _validate_all(documents, filename)[0]


def _validate_all(documents: list[Document], filename: str) -> list[ServiceSpec]:
    """Validate every document and report the problems of all of them together."""
    specs: list[ServiceSpec] = []
    problems: list[Problem] = []
    for doc in documents:
        try:
            specs.append(_validate(doc, filename))
        except SpecError as exc:
            problems += exc.problems
    if problems:
        raise SpecError(problems)
    return specs


def _validate(doc: Document, filename: str) -> ServiceSpec:
    if not isinstance(doc.data, dict):
        raise SpecError(
            [
                Problem(
                    filename, doc.start.line, doc.start.column, "",
                    "expected a mapping with apiVersion, kind, metadata and spec at the top of the "
                    f"document, got {describe(doc.data)}",
                )
            ]
        )
    try:
        # by_name=False: the YAML spelling is camelCase only; `progress_deadline` is a typo to report.
        return ServiceSpec.model_validate(doc.data, by_alias=True, by_name=False,
                                          context={TEMPLATES_CONTEXT: _template_names(doc.data)})
    except ValidationError as exc:
        raise SpecError(problems_from(exc, ServiceSpec, doc, filename)) from exc


def _template_names(data: dict[Any, Any]) -> frozenset[str] | None:
    """The names under spec.analysis, so that a reference to another is reported where it is made."""
    spec = data.get("spec")
    analysis = spec.get("analysis", {}) if isinstance(spec, dict) else None
    if not isinstance(analysis, dict) or not all(isinstance(k, str) for k in analysis):
        return None  # malformed: the model reports that, and checks references at the end if it can
    return frozenset(analysis)


def _at_start(filename: str, message: str) -> SpecError:
    return SpecError([Problem(filename, 1, 1, "", message)])


def _too_large(filename: str) -> SpecError:
    return _at_start(
        filename,
        f"the file is larger than {MAX_BYTES / (1 << 20):g} MiB; a spec is a few kilobytes"
        " — is this the right file?",
    )


__all__: list[str] = ["MAX_BYTES", "Spec", "load_document_text", "load_documents", "load_spec", "load_spec_text",
                      "load_specs", "load_windows"]
