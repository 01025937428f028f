"""`stagewise store copy --from A --to B`: move an installation's state to another store (SQLite → PostgreSQL).

Thin: reads the two locations (store/locations.py), copies (store/copy.py),
and prints the rows copied per table. Every failure — a location that names
no store, a target that holds data, a database that cannot be reached — is a
sentence on stderr and exit code 2, the password masked; never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stagewise.cli.client import default_state
from stagewise.errors import StagewiseError

EXIT_BAD_INPUT = 2
DEFAULT_STATE = default_state()
store_app = typer.Typer(name="store", help="The state store: SQLite (the default) or PostgreSQL.",
                        no_args_is_help=True)

LOCATION_HELP = ("sqlite (stagewise.db in --state), sqlite:PATH (a file, or a state directory), or a PostgreSQL URL "
                 "(postgresql://USER@HOST/DB, postgresql:///DB?host=/run/postgresql).")


@store_app.command("copy")
def copy(
    source: Annotated[str, typer.Option("--from", help=f"The store to copy: {LOCATION_HELP}", show_default=False)],
    target: Annotated[str, typer.Option("--to", help=f"The store to fill: {LOCATION_HELP}", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace whatever the target holds.")] = False,
    state: Annotated[Path, typer.Option("--state", envvar="STAGEWISE_STATE",
                                        help="State directory (for a bare `sqlite`).")] = DEFAULT_STATE,
) -> None:
    """Copy every table of one store into another, ids kept: stop the servers of both first."""
    from stagewise.store.copy import copy_store
    from stagewise.store.locations import parse_location

    err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
    try:
        counts = copy_store(parse_location(source, state_dir=state), parse_location(target, state_dir=state),
                            force=force)
    except StagewiseError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    table = Table(title="rows copied")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, str(n))
    out = Console(width=None if sys.stdout.isatty() else 120)
    out.print(table)
    out.print(f"copied {sum(counts.values())} rows; the counts match in both stores", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(store_app)
