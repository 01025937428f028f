"""`stagewise`: the command line. Thin: parse, call the server's API, render.

Exit codes: 0 ok, 1 the delivery failed or was rolled back, 2 bad input,
3 server unreachable.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live

from stagewise import version
from stagewise.basics import waiting
from stagewise.cli import advise, completion, convert, hosts, render, server, store
from stagewise.cli.client import Client, default_state
from stagewise.errors import ServerRefusedError, ServerUnreachableError, SpecError, StagewiseError

EXIT_OK, EXIT_DELIVERY_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 0, 1, 2, 3

app = typer.Typer(
    name="stagewise",
    help="Progressive delivery for services on hosts, VMs and single boxes.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion; `stagewise completion SHELL` (cli/completion.py)
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

StateOpt = Annotated[Path, typer.Option("--state", envvar="STAGEWISE_STATE", help="State directory.")]
DEFAULT_STATE = default_state()


def _print_version(wanted: bool) -> None:
    if wanted:
        out.print(f"stagewise {version()}", highlight=False)
        raise typer.Exit(EXIT_OK)


@app.callback()
def _options(show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                               help="Print stagewise's version and exit.")) -> None:
    """Progressive delivery for services on hosts, VMs and single boxes."""


def fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def client(state: Path) -> Client:
    try:
        return Client(state)
    except ServerUnreachableError as exc:
        fail(str(exc), EXIT_UNREACHABLE)


def call(state: Path, method: str, path: str, **kwargs: Any) -> Any:
    with client(state) as c:
        try:
            return c.request(method, path, **kwargs)
        except ServerUnreachableError as exc:
            fail(str(exc), EXIT_UNREACHABLE)
        except ServerRefusedError as exc:
            problems = exc.body.get("problems")
            if problems:
                for p in problems:
                    err.print(f"{p['file']}:{p['line']}:{p['column']}: {p['field'] + ': ' if p['field'] else ''}"
                              f"{p['message']}", highlight=False, markup=False)
                raise typer.Exit(EXIT_BAD_INPUT) from None
            fail(exc.detail, EXIT_BAD_INPUT if exc.status < 500 else EXIT_DELIVERY_FAILED)


@app.command()
def init(path: Annotated[Path, typer.Argument(help="Where to write the example spec.")] = Path("stagewise.yaml"),
         force: bool = typer.Option(False, "--force", help="Overwrite an existing file.")) -> None:
    """Write a commented example spec."""
    from stagewise.spec import EXAMPLE_SPEC

    if path.exists() and not force:
        fail(f"{path} exists; use --force to overwrite it", EXIT_BAD_INPUT)
    path.write_text(EXAMPLE_SPEC)
    out.print(f"wrote {path}; check it with: stagewise validate {path}")


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="Spec files.")]) -> None:
    """Check spec files; print every problem with file:line:column."""
    from stagewise.spec import load_specs

    bad = False
    for f in files:
        try:
            specs = load_specs(f)
        except SpecError as exc:
            bad = True
            for p in exc.problems:
                err.print(str(p), highlight=False, markup=False)
            continue
        for s in specs:
            out.print(f"{f}: {s.name} ok ({s.spec.strategy.name}, release {s.spec.release.version})",
                      highlight=False)
    if bad:
        raise typer.Exit(EXIT_BAD_INPUT)


server.register(app)  # its options and the systemd unit in cli/server.py


@app.command()
def apply(files: Annotated[list[Path], typer.Argument(help="Spec files.")],
          state: StateOpt = DEFAULT_STATE,
          wait: bool = typer.Option(False, "--wait",
                                    help="Wait until the delivery ends; exit 1 if it did not succeed."),
          timeout: float = typer.Option(1800, help="With --wait: give up after this many seconds."),
          override_freeze: bool = typer.Option(False, "--override-freeze",
                                               help="Let the delivery through the freeze windows (needs --reason; "
                                                    "recorded in the event log)."),
          reason: str | None = typer.Option(None, "--reason", help="Why the freeze windows are overridden.")) -> None:
    """Apply specs (Services or Pipelines): a new release starts a delivery."""
    from stagewise.spec import load_documents

    if override_freeze and not reason:
        fail("--override-freeze needs --reason TEXT: it goes into the event log", EXIT_BAD_INPUT)
    results = []
    for f in files:
        try:
            documents = load_documents(f)
        except SpecError as exc:
            for p in exc.problems:
                err.print(str(p), highlight=False, markup=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        if len(documents) != 1:
            fail(f"{f}: holds {len(documents)} specs; apply takes one spec per file", EXIT_BAD_INPUT)
        body: dict[str, Any] = {"spec": f.read_text(), "filename": str(f)}
        if override_freeze:
            body["override_freeze"] = reason
        r = call(state, "POST", "/api/v1/apply", json=body)
        out.print(f"{r['service']}: {r['result']}" + (f" (delivery #{r['delivery']})" if r["delivery"] else ""))
        results.append(r)
    if wait:
        codes = [_wait(state, r["service"], timeout) for r in results if r["delivery"]]
        raise typer.Exit(max(codes, default=EXIT_OK))


def _wait(state: Path, service: str, timeout: float) -> int:
    phase = waiting.blocking_until(lambda: _finished_phase(state, service), timeout=timeout, interval=0.5)
    if phase is None:
        phase = call(state, "GET", f"/api/v1/services/{service}").get("phase")
        fail(f"{service}: still {phase} after {timeout:.0f}s", EXIT_DELIVERY_FAILED)
    out.print(f"{service}: {phase}")
    return EXIT_OK if phase == "Succeeded" else EXIT_DELIVERY_FAILED


def _finished_phase(state: Path, service: str) -> str | None:
    """The phase of the service's delivery once it has ended (Succeeded, RolledBack, Failed); None before."""
    phase = call(state, "GET", f"/api/v1/services/{service}").get("phase")
    return phase if phase in ("Succeeded", "RolledBack", "Failed") else None


@app.command()
def status(service: Annotated[str | None, typer.Argument(help="A service or a pipeline; all services when omitted.",
                                                        autocompletion=completion.complete_service)] = None,
           state: StateOpt = DEFAULT_STATE,
           watch: bool = typer.Option(False, "--watch", "-w", help="Keep the view live."),
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show services and their deliveries, or where each release of a pipeline stands."""
    if service and not watch and not _is_service(state, service):
        from stagewise.cli import pipelines

        if pipelines.show(state, service, as_json=as_json):
            return
    path = f"/api/v1/services/{service}" if service else "/api/v1/services"
    if as_json:
        out.print_json(json.dumps(call(state, "GET", path)))
        return

    def view() -> Any:
        data = call(state, "GET", path)
        return render.status_panel(data) if service else render.services_table(data)

    if not watch:
        out.print(view())
        return
    try:
        with Live(view(), console=out, refresh_per_second=4) as live:
            while True:
                time.sleep(0.5)
                live.update(view())
    except KeyboardInterrupt:
        pass


def found(state: Path, path: str) -> Any:
    """What a GET of `path` answers; None when the server refuses it (no service or pipeline by that name)."""
    with client(state) as c:
        try:
            return c.request("GET", path)
        except ServerRefusedError:
            return None
        except ServerUnreachableError as exc:
            fail(str(exc), EXIT_UNREACHABLE)


def _is_service(state: Path, name: str) -> bool:
    return found(state, f"/api/v1/services/{name}") is not None


def _verb(verb: str, service: str, state: Path, **params: Any) -> None:
    d = call(state, "POST", f"/api/v1/services/{service}/{verb}", params=params)
    out.print(f"{service}: delivery #{d['id']} {d['from'] or '-'} → {d['to']} is {d['phase']}"
              f" (step {d['step']}/{d['steps']})")


ServiceArg = Annotated[str, typer.Argument(help="The service.", autocompletion=completion.complete_service)]


@app.command()
def promote(service: ServiceArg, state: StateOpt = DEFAULT_STATE,
            full: bool = typer.Option(False, "--full", help="Skip the remaining steps.")) -> None:
    """Continue past the current step (a pause, an analysis); --full: promote at once."""
    _verb("promote", service, state, full=full)


@app.command()
def abort(service: ServiceArg, state: StateOpt = DEFAULT_STATE) -> None:
    """Roll the delivery back to the stable release."""
    _verb("abort", service, state)


@app.command()
def pause(service: ServiceArg, state: StateOpt = DEFAULT_STATE) -> None:
    """Hold the delivery where it is."""
    _verb("pause", service, state)


@app.command()
def resume(service: ServiceArg, state: StateOpt = DEFAULT_STATE) -> None:
    """Let a paused delivery go on."""
    _verb("resume", service, state)


@app.command()
def retry(service: ServiceArg, state: StateOpt = DEFAULT_STATE) -> None:
    """Start a rolled-back delivery again."""
    _verb("retry", service, state)


@app.command()
def undo(service: ServiceArg, state: StateOpt = DEFAULT_STATE) -> None:
    """Deliver the previous stable release again."""
    _verb("undo", service, state)


@app.command()
def delete(service: ServiceArg, state: StateOpt = DEFAULT_STATE,
           keep_running: bool = typer.Option(False, "--keep-running",
                                             help="Forget the service but leave its router and instances running."),
           force: bool = typer.Option(False, "--force",
                                      help="Delete even with a delivery in flight; it ends Failed where it stands.")
           ) -> None:
    """Drain and stop the service's router, stop its instances, forget it; its history stays."""
    d = call(state, "DELETE", f"/api/v1/services/{service}", params={"keep_running": keep_running, "force": force})
    out.print(render.deletion_text(d), highlight=False, markup=False)


@app.command()
def history(service: ServiceArg, state: StateOpt = DEFAULT_STATE,
            as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The service's deliveries, newest first."""
    rows = call(state, "GET", f"/api/v1/services/{service}/history")
    if as_json:
        out.print_json(json.dumps(rows))
    else:
        out.print(render.history_table(service, rows))


@app.command()
def demo(
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    router: str = typer.Option("builtin", "--router", help="The data plane: builtin, haproxy or nginx."),
    hosts: int = typer.Option(0, "--hosts", min=0, max=32,
                              help="Run on N hosts over SSH (network namespaces made for the demo; root only)."),
) -> None:
    """Watch a good release promoted and bad ones rolled back, on this machine (or on N namespace hosts)."""
    from stagewise.cli.demo import run_demo
    from stagewise.routers import ROUTER_KINDS

    if router not in ROUTER_KINDS:
        err.print(f"--router {router}: expected one of {', '.join(ROUTER_KINDS)}")
        raise typer.Exit(2)
    if hosts:
        from stagewise.cli.demo_hosts import run_hosts_demo

        raise typer.Exit(run_hosts_demo(count=hosts, as_json=as_json, console=out, router=router))
    code = run_demo(as_json=as_json, console=out, router=router)
    raise typer.Exit(code)


def _register_analyze() -> None:
    """`stagewise analyze`: replay recorded requests through a judge (stagewise.cli.analyze)."""
    from stagewise.cli.analyze import analyze

    app.command(name="analyze")(analyze)


_register_analyze()


@app.command(hidden=True)
def router(admin_socket: str = typer.Option(..., "--admin-socket"),
           metrics_listen: str | None = typer.Option(None, "--metrics-listen")) -> None:
    """Run the builtin router (the controller starts it)."""
    from stagewise.routers.builtin.proxy import main as proxy_main

    argv = ["--admin-socket", admin_socket] + (["--metrics-listen", metrics_listen] if metrics_listen else [])
    raise typer.Exit(proxy_main(argv))


advise.register(app)  # recommend, compare
convert.register(app)
completion.register(app)
hosts.register(app)  # hosts check
store.register(app)  # store copy


def _register_people() -> None:
    """`approve`, `token create|list|delete`, `audit` (stagewise.cli.people); `release` (stagewise.cli.pipelines)."""
    from stagewise.cli import people, pipelines

    people.register(app)
    pipelines.register(app)


_register_people()


def main() -> None:
    try:
        app(prog_name=completion.PROG_NAME)  # also under `python -m stagewise`: completion is keyed by the name
    except StagewiseError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(EXIT_BAD_INPUT)
