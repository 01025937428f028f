"""`stagewise release PIPELINE VERSION`, and `stagewise status PIPELINE`: a release's way through the stages.

Thin: one API call each, rendered as a table of releases by stage, so a
person sees at a glance where each release stands (delivering in staging,
soaking in production, stopped where it failed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stagewise.basics import waiting
from stagewise.cli import main as cli

STATUS_STYLE = {"succeeded": "green", "failed": "bold red", "stopped": "dim", "delivering": "blue",
                "soaking": "magenta", "waiting": "cyan", "pending": "dim"}
PHASE_STYLE = {"Succeeded": "bold green", "Failed": "bold red", "Progressing": "blue", "Superseded": "dim"}


def release(pipeline: Annotated[str, typer.Argument(help="The pipeline.")],
            version: Annotated[str, typer.Argument(help="The release every stage's service gets.")],
            state: cli.StateOpt = cli.DEFAULT_STATE,
            wait: bool = typer.Option(False, "--wait", help="Wait until the release went through or stopped; "
                                                            "exit 1 unless it went through."),
            timeout: float = typer.Option(3600, help="With --wait: give up after this many seconds.")) -> None:
    """Start VERSION through PIPELINE's stages: the first now, each next once the one before succeeded and soaked."""
    r = cli.call(state, "POST", f"/api/v1/pipelines/{pipeline}/releases", json={"version": version})
    cli.out.print(f"{pipeline}: release {r['version']} started ({' → '.join(s['name'] for s in r['stages'])})",
                  highlight=False)
    if not wait:
        return
    ended = waiting.blocking_until(lambda: _ended_release(state, pipeline, r["id"]), timeout=timeout, interval=0.5)
    if ended is None:
        cli.fail(f"{pipeline}: release {version} still in flight after {timeout:.0f}s", cli.EXIT_DELIVERY_FAILED)
    p, phase = ended
    cli.out.print(pipeline_panel(p))
    raise typer.Exit(cli.EXIT_OK if phase == "Succeeded" else cli.EXIT_DELIVERY_FAILED)


def _ended_release(state: Path, pipeline: str, release_id: int) -> tuple[dict[str, Any], str] | None:
    """The pipeline and the phase of its release `release_id` once that release is no longer in flight."""
    p = cli.call(state, "GET", f"/api/v1/pipelines/{pipeline}", params={"limit": 20})
    mine = next((x for x in p["releases"] if x["id"] == release_id), None)
    return (p, mine["phase"]) if mine is not None and mine["phase"] != "Progressing" else None


def pipeline_panel(p: dict[str, Any]) -> RenderableType:
    """Where each release of a pipeline stands, stage by stage (newest first)."""
    head = Text(f"pipeline {p['name']}: " + " → ".join(f"{s['name']} ({s['service']})" for s in p["stages"]),
                style="bold")
    table = Table()
    table.add_column("release")
    table.add_column("phase")
    for stage in p["stages"]:
        table.add_column(stage["name"])
    notes: list[Text] = []
    for r in p["releases"]:
        cells = [Text(s["status"], style=STATUS_STYLE.get(s["status"], "")) for s in r["stages"]]
        table.add_row(r["version"], Text(r["phase"], style=PHASE_STYLE.get(r["phase"], "")), *cells)
    if p["releases"]:
        latest = p["releases"][0]
        for s in latest["stages"]:
            if s["message"]:
                notes.append(Text(f"{latest['version']} · {s['name']}: {s['message']}"
                                  + (f" (delivery #{s['delivery']})" if s["delivery"] else ""), style="dim"))
        if latest["message"]:
            notes.append(Text(f"{latest['version']}: {latest['message']}"))
    return Group(head, table, *notes)


def show(state: Path, name: str, *, as_json: bool) -> bool:
    """`stagewise status NAME` for a pipeline; False when NAME is no pipeline."""
    p = cli.found(state, f"/api/v1/pipelines/{name}")
    if p is None:
        return False
    if as_json:
        cli.out.print_json(json.dumps(p))
    else:
        cli.out.print(pipeline_panel(p))
    return True


def register(app: typer.Typer) -> None:
    app.command()(release)
