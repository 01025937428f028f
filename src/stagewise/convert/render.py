"""Documents → YAML text with a header comment that says what was not converted, and where.

Block style for mappings, flow style for lists of scalars (`templates: [a,
b]`, `command: [python3, -m, app]`): the shape of the specs in the README.
The header is the record a reader of the converted file needs: the source, the
count of fields mapped and not, and each note at file:line:column.

Pure: returns text.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from stagewise.convert.ledger import Note, Tally


def _shaped(value: Any) -> Any:
    if isinstance(value, dict):
        out = CommentedMap()
        for key, item in value.items():
            out[key] = _shaped(item)
        return out
    if isinstance(value, list):
        seq = CommentedSeq([_shaped(item) for item in value])
        if value and all(not isinstance(item, dict | list) for item in value):
            seq.fa.set_flow_style()
        return seq
    return value


def dump_documents(documents: list[dict[str, Any]]) -> str:
    """YAML documents separated by `---`."""
    yaml = YAML(typ="rt")
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    parts = []
    for doc in documents:
        stream = io.StringIO()
        yaml.dump(_shaped(doc), stream)
        parts.append(stream.getvalue())
    return "---\n".join(parts)


def header(title: str, tallies: dict[str, Tally], notes: list[Note]) -> str:
    """The comment block at the top of a converted file."""
    lines = [title]
    for file, tally in tallies.items():
        lines.append(f"{file}: {tally.mapped} fields mapped, {tally.not_mapped} not mapped.")
    dropped = [n for n in notes if not n.mapped]
    caveats = [n for n in notes if n.mapped]
    if dropped:
        lines.append("Not converted:")
        lines += [f"  {n}" for n in dropped]
    if caveats:
        lines.append("Converted, with a difference:")
        lines += [f"  {n}" for n in caveats]
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


__all__ = ["dump_documents", "header"]
