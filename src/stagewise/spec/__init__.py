"""Service specs from YAML: validated models, or a `SpecError` naming file:line:column.

    load_spec(path)            the one spec in a file
    load_specs(path)           every spec in a file of `---`-separated documents
    load_spec_text(text)       the one spec in a string (or bytes)
    load_documents(path)       every Service or Pipeline spec in a file
    load_document_text(text)   the one Service or Pipeline spec in a string
    load_windows(path)         a `kind: Windows` file of freeze windows shared by every service
    EXAMPLE_SPEC               the commented spec `stagewise init` writes

This layer sits just above `core`: it imports `stagewise.core` and
`stagewise.errors` only, reads files but runs nothing, and decides nothing about
validity beyond what the models in `core.spec` say.
"""

from stagewise.spec.example import EXAMPLE_SPEC
from stagewise.spec.loader import (
    MAX_BYTES,
    Spec,
    load_document_text,
    load_documents,
    load_spec,
    load_spec_text,
    load_specs,
    load_windows,
)

__all__ = ["EXAMPLE_SPEC", "MAX_BYTES", "Spec", "load_document_text", "load_documents", "load_spec",
           "load_spec_text", "load_specs", "load_windows"]
