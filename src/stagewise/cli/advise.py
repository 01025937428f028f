"""`stagewise recommend` and `stagewise compare`: advice, then numbers.

`recommend` ranks the four strategies for a team's risk profile (the
advisor) and can write a starter spec for the winner. `compare` runs every
strategy over a simulated service (the simulator) and prints what each one
cost and protected, with the guide's words held against the numbers
(`advise_report`). Both run locally: no server, no state directory.

Registered on the main app by `register`; heavy imports (the simulator,
matplotlib) wait until a command runs.
"""

from __future__ import annotations

import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from stagewise.errors import SpecError

if TYPE_CHECKING:  # imported where used: `stagewise --help` stays quick
    from stagewise.advisor import Recommendation

EXIT_BAD_INPUT = 2
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class LevelChoice(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


def register(app: typer.Typer) -> None:
    app.command(name="recommend")(recommend)
    app.command(name="compare")(compare)


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(EXIT_BAD_INPUT)


def _spec_error(exc: SpecError) -> NoReturn:
    for p in exc.problems:
        err.print(str(p), highlight=False, markup=False)
    raise typer.Exit(EXIT_BAD_INPUT)



def recommend(
    risk_tolerance: Annotated[LevelChoice | None, typer.Option(
        "--risk-tolerance", case_sensitive=False, help="How much risk of a bad release the team accepts.")] = None,
    complexity: Annotated[LevelChoice | None, typer.Option(
        "--complexity", case_sensitive=False, help="How complex the system is.")] = None,
    user_impact: Annotated[LevelChoice | None, typer.Option(
        "--user-impact", case_sensitive=False, help="How much a failure hurts users.")] = None,
    rollback: Annotated[LevelChoice | None, typer.Option(
        "--rollback", case_sensitive=False, help="What rollback the team can do by itself.")] = None,
    zero_downtime: Annotated[bool | None, typer.Option(
        "--zero-downtime/--no-zero-downtime", help="Users must never see the service down.")] = None,
    spare_capacity: Annotated[bool | None, typer.Option(
        "--spare-capacity/--no-spare-capacity", help="Room for a second full environment.")] = None,
    metrics: Annotated[bool | None, typer.Option(
        "--metrics/--no-metrics", help="Live metrics exist to judge a canary.")] = None,
    users: Annotated[int | None, typer.Option("--users", min=1, help="Size of the user base.")] = None,
    schema_change: Annotated[bool | None, typer.Option(
        "--schema-change/--no-schema-change", help="The release changes shared data.")] = None,
    from_file: Annotated[Path | None, typer.Option(
        "--from", help="Read the inputs from a profile (YAML) or a Service spec; flags override it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    write: Annotated[Path | None, typer.Option(
        "--write", help="Write a starter spec for the recommended strategy to this file.")] = None,
    force: Annotated[bool, typer.Option("--force", help="With --write: overwrite an existing file.")] = False,
) -> None:
    """Rank the delivery strategies for a risk profile, with the reasons; write a starter spec."""
    from stagewise.advisor import Inputs, load_inputs, starter_spec
    from stagewise.advisor import recommend as rank
    from stagewise.spec import load_spec_text

    try:
        base = load_inputs(from_file) if from_file is not None else Inputs()
    except SpecError as exc:
        _spec_error(exc)
    given: dict[str, Any] = {
        "risk_tolerance": risk_tolerance, "complexity": complexity, "user_impact": user_impact,
        "rollback": rollback, "zero_downtime": zero_downtime, "spare_capacity": spare_capacity,
        "metrics": metrics, "users": users, "schema_change": schema_change,
    }
    update = {k: (v.value if isinstance(v, LevelChoice) else v) for k, v in given.items() if v is not None}
    inputs = base.model_copy(update=update)
    result = rank(inputs)
    if write is not None:
        if write.exists() and not force:
            _fail(f"{write} exists; use --force to overwrite it")
        text = starter_spec(result.recommendation, inputs)
        load_spec_text(text, str(write))  # what we write, `stagewise validate` accepts
        write.write_text(text)
    if as_json:
        print(json.dumps(result.as_json(), indent=2))
        if write is not None:
            err.print(f"wrote {write}", highlight=False)
        return
    _print_recommendation(result, write)


def _print_recommendation(result: Recommendation, write: Path | None) -> None:
    """The ranking as a table with each strategy's reasons, the pick, the advice, and where the starter went."""
    table = Table(title="Delivery strategies for these inputs", show_lines=True)
    for column in ("rank", "strategy", "score", "reasons for (+) and against (-)"):
        table.add_column(column, overflow="fold")
    for i, r in enumerate(result.ranking, start=1):
        reasons = [x for x in r.reasons if x not in result.advice]
        table.add_row(str(i), r.strategy + (" (ruled out)" if r.ruled_out else ""), str(r.score),
                      "\n".join(reasons) or "-")
    out.print(table)
    out.print(f"Recommendation: [bold]{result.recommendation}[/]")
    if result.tie is not None:
        out.print(f"A tie decided it: {result.tie}", highlight=False, markup=False)
    for line in result.advice:
        out.print(line, highlight=False)
    if write is not None:
        out.print(f"wrote a starter spec for {result.recommendation} to {write}; check it with: "
                  f"stagewise validate {write}", highlight=False)
    else:
        out.print("A starter spec for it: stagewise recommend ... --write FILE", highlight=False)


def compare(
    scenario: Annotated[Path | None, typer.Option(
        "--scenario", help="A scenario YAML; default: the one shipped (200 req/s, 10 instances, 5% errors).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, max=1000, help="Runs per strategy and release.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Write an HTML report with charts to this file.")] = None,
) -> None:
    """Simulate every strategy on a good and a bad release; measure what each costs and protects."""
    from stagewise.cli import advise_report
    from stagewise.sim import compare as run_compare
    from stagewise.sim import default_scenario, load_scenario

    try:
        chosen = load_scenario(scenario) if scenario is not None else default_scenario()
    except SpecError as exc:
        _spec_error(exc)
    started = time.perf_counter()
    comparison = run_compare(chosen, seeds=seeds,
                             progress=None if as_json else lambda name: err.print(f"simulating {name}…"))
    wall = time.perf_counter() - started
    if report is not None:
        report.write_text(advise_report.html_report(comparison, wall))
    if as_json:
        print(json.dumps(advise_report.as_json(comparison, wall), indent=2))
        return
    labels = advise_report.best_for(comparison)
    table = Table(title=f"{chosen.name}: medians over {seeds} seeds ({wall:.1f}s)", show_lines=True)
    for title in ("strategy", "bad requests / users", "decided after (s)", "rollback / recovered (s)",
                  "full rollout (s)", "peak extra instances", "steps / moving parts", "downtime good / bad (s)",
                  "best for (measured)"):
        table.add_column(title, overflow="fold", justify="left" if title.startswith(("strategy", "best")) else "right")
    f = advise_report.fmt
    for name, s in comparison.summaries.items():
        n = s.numbers
        table.add_row(name, f"{f(n['bad_requests'])} / {f(n['bad_users'])}", f(n["detect_s"]),
                      f"{f(n['rollback_s'])} / {f(n['recovery_s'])}", f(n["rollout_s"]), f(n["peak_extra"]),
                      f"{f(n['steps'])} / {f(n['parts'])}", f"{f(n['downtime_good_s'])} / {f(n['downtime_bad_s'])}",
                      ", ".join(labels[name]) or "-")
    out.print(table)
    for finding in advise_report.findings(comparison):
        mark = "[green]holds[/]" if finding.holds else "[red]disagrees[/]"
        out.print(f"{mark}: {finding.words}. [dim]{finding.measured}[/]"
                  + (f"\n  why: {finding.why}" if finding.why else ""), highlight=False)
    if report is not None:
        out.print(f"wrote {report}", highlight=False)
