"""`stagewise convert`: Argo Rollouts and Flagger manifests in, stagewise specs out (or stagewise to Argo).

Thin: reads the files, calls `stagewise.convert`, writes the results to stdout
or `--out DIR`, and prints every field that was not converted to stderr with
its file:line:column. Exit 0 with notes; 2 when the input is no Rollout or
Canary (or, with `--to argo`, no stagewise Service), or cannot be read.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from stagewise.errors import SpecError

EXIT_BAD_INPUT = 2
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class Target(StrEnum):
    stagewise = "stagewise"
    argo = "argo"


def register(app: typer.Typer) -> None:
    app.command(name="convert")(convert)


def convert(
    files: Annotated[list[Path], typer.Argument(help="Manifests: Rollouts with their AnalysisTemplates and "
                                                     "Services, Canaries, or (--to argo) stagewise specs.")],
    to: Annotated[Target, typer.Option("--to", case_sensitive=False, help="What to write.")] = Target.stagewise,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write one file per service into this directory "
                                                               "instead of stdout.")] = None,
) -> None:
    """Convert Argo Rollouts / Flagger manifests to stagewise specs, or stagewise specs to Argo Rollouts."""
    from stagewise.convert import to_argo, to_stagewise

    inputs = []
    for path in files:
        try:
            inputs.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            err.print(f"{path}:1:1: cannot read the file: {reason}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
    try:
        result = to_argo(inputs) if to is Target.argo else to_stagewise(inputs)
    except SpecError as exc:
        for problem in exc.problems:
            err.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    for note in result.notes:
        prefix = "note" if note.mapped else "not converted"
        err.print(f"{note.file}:{note.line}:{note.column}: {prefix}: {note.field + ': ' if note.field else ''}"
                  f"{note.message}", highlight=False, markup=False, soft_wrap=True)
    for file, tally in result.tallies.items():
        err.print(f"{file}: {tally.mapped} fields mapped, {tally.not_mapped} not mapped", highlight=False,
                  markup=False)
    if out_dir is None:
        sys.stdout.write("---\n".join(o.text for o in result.outputs))
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".argo.yaml" if to is Target.argo else ".yaml"
    for output in result.outputs:
        target = out_dir / f"{output.name}{suffix}"
        target.write_text(output.text, encoding="utf-8")
        err.print(f"wrote {target}", highlight=False, markup=False)
