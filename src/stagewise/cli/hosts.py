"""`stagewise hosts check FILE`: the pre-flight checks of a spec's hosts, as a table; exit 0 when all pass.

The same checks the controller runs before a delivery's first instance starts
(platforms/ssh.py `check`): each host reachable over SSH without a prompt,
its host key known, the release's program present, disk space for the
artifact, the root directory writable, the clock close to this machine's. It
runs here, on the machine that will run the server, so what it reaches is
what the server will reach. It starts nothing and leaves nothing running but
the SSH masters (`ssh -O exit` closes them at the end).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from stagewise.platforms._ssh_hosts import HostCheck

CHECKS = ("reachable", "host key", "program", "disk", "root writable", "clock")

hosts_app = typer.Typer(name="hosts", help="The hosts of the ssh platform.", no_args_is_help=True)


async def run_checks(spec_file: Path) -> list[tuple[str, list[HostCheck]]]:
    """Every check of every ssh service in `spec_file`, per service."""
    from stagewise.platforms.ssh import SshPlatform
    from stagewise.spec import load_specs

    results = []
    with tempfile.TemporaryDirectory(prefix="stagewise-hosts-") as state:
        for spec in load_specs(spec_file):
            if spec.spec.platform.kind != "ssh":
                continue
            platform = SshPlatform(Path(state), spec.spec.platform)
            try:
                results.append((spec.name, await platform.check(service=spec.name, release=spec.spec.release)))
            finally:
                await platform.close()
    return results


def table(service: str, checks: list[HostCheck]) -> Table:
    t = Table(title=f"hosts of {service}")
    t.add_column("host")
    for name in CHECKS:
        t.add_column(name)
    by_host: dict[str, dict[str, HostCheck]] = {}
    for c in checks:
        by_host.setdefault(c.host, {})[c.check] = c
    for host, found in by_host.items():
        cells = []
        for name in CHECKS:
            cells.append(_cell(name, found.get(name)))
        t.add_row(host, *cells)
    return t


def _cell(name: str, c: HostCheck | None) -> str:
    if c is None:
        return "[dim]-[/]"
    if c.ok:
        return f"[green]ok[/] {c.detail}" if name in ("program", "disk", "clock") else "[green]ok[/]"
    return f"[red]FAIL[/] {c.detail}"


@hosts_app.command("check")
def check(spec_file: Annotated[Path, typer.Argument(help="A spec file whose platform is ssh.")]) -> None:
    """Check that every host of the spec can take its release; exit 1 if one cannot."""
    console = Console(width=200)
    results = asyncio.run(run_checks(spec_file))
    if not results:
        console.print(f"{spec_file}: no service with platform kind ssh", highlight=False)
        raise typer.Exit(2)
    failed = False
    for service, checks in results:
        console.print(table(service, checks))
        for c in checks:
            if c.ok is False:
                failed = True
                console.print(f"[red]{c.host}[/]: {c.check}: {c.detail}", highlight=False)
    raise typer.Exit(1 if failed else 0)


def register(app: typer.Typer) -> None:
    app.add_typer(hosts_app)
