"""`stagewise approve`, `stagewise token ...` and `stagewise audit`: the people around a delivery.

Thin, like the rest of the CLI: each command is one API call and its answer
in words. The caller's identity is their token (`STAGEWISE_TOKEN`, else the
server's own file `token`); the server records it with every approval and in
the audit log.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stagewise.cli import main as cli

token_app = typer.Typer(name="token", help="API tokens with a name and a role (viewer, operator, admin).",
                        no_args_is_help=True)


def approve(service: Annotated[str, typer.Argument(help="The service (or pipeline) waiting for an approval.")],
            state: cli.StateOpt = cli.DEFAULT_STATE,
            comment: str = typer.Option("", "--comment", "-m", help="Kept with the approval in the event log."),
            reject: bool = typer.Option(False, "--reject", help="Say no: the delivery rolls back.")) -> None:
    """Approve what a delivery (or a pipeline's next stage) waits for, as your token's name; --reject to say no."""
    params = {"comment": comment, "reject": reject}
    path = f"/api/v1/services/{service}/approve"
    if _is_pipeline(state, service):
        path = f"/api/v1/pipelines/{service}/approve"
        r = cli.call(state, "POST", path, params=params)
        cli.out.print(f"{service}: release {r['version']} is {r['phase']}"
                      + "".join(f"; {s['name']} {s['status']}" for s in r["stages"]), highlight=False)
        return
    d = cli.call(state, "POST", path, params=params)
    waiting = (d.get("waiting") or {}).get("holds") or []
    still = "; still waiting: " + "; ".join(h["message"] for h in waiting) if d["phase"] == "Waiting" and waiting \
        else ""
    cli.out.print(f"{service}: delivery #{d['id']} {d['from'] or '-'} → {d['to']} is {d['phase']}{still}",
                  highlight=False)


def _is_pipeline(state: Path, name: str) -> bool:
    return cli.found(state, f"/api/v1/pipelines/{name}") is not None


@token_app.command("create")
def token_create(name: Annotated[str, typer.Argument(help="Who holds it (lower-case letters, digits, '-').")],
                 role: str = typer.Option(..., "--role", help="viewer, operator or admin."),
                 state: cli.StateOpt = cli.DEFAULT_STATE) -> None:
    """Make a token; it is printed once, alone on the last line (use it as STAGEWISE_TOKEN)."""
    if role not in ("viewer", "operator", "admin"):
        cli.fail(f"--role {role}: expected viewer, operator or admin", cli.EXIT_BAD_INPUT)
    r = cli.call(state, "POST", "/api/v1/tokens", json={"name": name, "role": role})
    cli.err.print(f"token {r['name']} ({r['role']}); it is shown this once, keep it:", highlight=False)
    print(r["token"], flush=True)


@token_app.command("list")
def token_list(state: cli.StateOpt = cli.DEFAULT_STATE) -> None:
    """Every token's name and role (never the token)."""
    table = Table(title="tokens")
    for col in ("name", "role", "created", "by"):
        table.add_column(col)
    for t in cli.call(state, "GET", "/api/v1/tokens"):
        table.add_row(t["name"], t["role"], time.strftime("%Y-%m-%d %H:%M", time.localtime(t["created_at"])),
                      t["created_by"])
    cli.out.print(table)


@token_app.command("delete")
def token_delete(name: Annotated[str, typer.Argument(help="The token's name.")],
                 state: cli.StateOpt = cli.DEFAULT_STATE) -> None:
    """Drop a token: it stops working at once."""
    r = cli.call(state, "DELETE", f"/api/v1/tokens/{name}")
    cli.out.print(f"token {r['name']} ({r['role']}) deleted", highlight=False)


def audit(state: cli.StateOpt = cli.DEFAULT_STATE,
          as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
          limit: int = typer.Option(200, help="At most this many entries.")) -> None:
    """Every mutating call, allowed or refused, with the caller's token name."""
    rows = cli.call(state, "GET", "/api/v1/audit", params={"limit": limit})
    if as_json:
        cli.out.print_json(json.dumps(rows))
        return
    table = Table(title="audit")
    for col in ("#", "at", "who", "role", "call", "status"):
        table.add_column(col)
    for e in rows:
        table.add_row(str(e["id"]), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"])), e["actor"],
                      e["role"], f"{e['method']} {e['path']}", str(e["status"]))
    cli.out.print(table)


def register(app: typer.Typer) -> None:
    app.command()(approve)
    app.add_typer(token_app)
    app.command()(audit)
