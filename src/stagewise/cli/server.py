"""`stagewise server`: run the API, the dashboard and the controller — or print the systemd unit that does.

Thin: gathers the settings given on the command line or in the environment
(each `--option` has a `STAGEWISE_OPTION` variable), which are fixed for the
life of the process, and the settings file, which the server reads again on
SIGHUP (api/settings.py); then serves (api/server.py). Bad settings are
refused before anything starts, each with where it was given.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stagewise.cli.client import default_state
from stagewise.errors import SettingsError

EXIT_BAD_INPUT = 2
DEFAULT_STATE = default_state()
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def register(app: typer.Typer) -> None:
    app.command(name="server")(server)


def _refuse(message: str) -> typer.Exit:
    err.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def program() -> list[str]:
    """How this stagewise is started: its console script beside this Python, or this Python with `-m`."""
    beside = Path(sys.executable).parent / "stagewise"  # not resolved: a venv's python is a link out of it
    return [str(beside)] if beside.is_file() and os.access(beside, os.X_OK) else [sys.executable, "-m", "stagewise"]


def _fixed(listen: str | None, log_level: str | None, log_format: str | None, tick: str | None) -> dict[str, Any]:
    """The settings given on the command line or in the environment, checked; None for those not given."""
    from stagewise.api.settings import check_format, check_level, check_listen, check_tick

    given = {"listen": (listen, check_listen), "log_level": (log_level, check_level),
             "log_format": (log_format, check_format), "tick": (tick, check_tick)}
    fixed: dict[str, Any] = {}
    for name, (value, check) in given.items():
        try:
            fixed[name] = None if value is None else check(value)
        except ValueError as exc:
            raise _refuse(f"--{name.replace('_', '-')}: {exc}") from None
    return fixed


def server(
    state: Annotated[Path, typer.Option("--state", envvar="STAGEWISE_STATE", help="State directory.")]
    = DEFAULT_STATE,
    listen: Annotated[str | None, typer.Option(
        "--listen", envvar="STAGEWISE_LISTEN", show_default=False,
        help="host:port of the API and dashboard; port 0 picks a free one. [default: 127.0.0.1:7420]")] = None,
    settings: Annotated[Path | None, typer.Option(
        "--settings", envvar="STAGEWISE_SETTINGS",
        help="A TOML settings file (listen, log-level, log-format, tick, resync), read at start and again on SIGHUP; "
             "the command line and environment win over it.")] = None,
    log_level: Annotated[str | None, typer.Option(
        "--log-level", envvar="STAGEWISE_LOG_LEVEL", show_default=False,
        help="debug, info, warning or error. [default: info]")] = None,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", envvar="STAGEWISE_LOG_FORMAT", show_default=False,
        help="text, or json: one JSON object per line (time, level, logger, message, service, delivery, ...). "
             "[default: text]")] = None,
    tick: Annotated[str | None, typer.Option(
        "--tick", envvar="STAGEWISE_TICK", show_default=False,
        help="Seconds between reconcile passes (0.25, 500ms). [default: 0.25]")] = None,
    print_unit: Annotated[bool, typer.Option(
        "--print-systemd-unit", help="Print a hardened systemd unit that runs this server, and exit.")] = False,
    unit_user: Annotated[str, typer.Option(
        "--unit-user", help="With --print-systemd-unit: the system user the service runs as.")] = "stagewise",
    low_ports: Annotated[bool, typer.Option(
        "--low-ports", help="With --print-systemd-unit: routers may listen below port 1024 "
                            "(grants CAP_NET_BIND_SERVICE).")] = False,
    reads: Annotated[str, typer.Option(
        "--reads", help="open: anyone who reaches the address may read; token: reads need at least a "
                        "viewer token.")] = "open",
    windows: Annotated[Path | None, typer.Option(
        "--windows", help="A `kind: Windows` file of freeze windows for every service (read again when it "
                          "changes).")] = None,
    store: Annotated[str, typer.Option(
        "--store", envvar="STAGEWISE_STORE",
        help="Where the state is kept: sqlite (stagewise.db in the state directory), sqlite:PATH, or a PostgreSQL "
             "URL: postgresql://USER@HOST/DB, postgresql:///DB?host=/run/postgresql (a password is better kept "
             "in ~/.pgpass than here).")] = "sqlite",
    name: Annotated[str | None, typer.Option(
        "--name", envvar="STAGEWISE_NAME", show_default=False,
        help="This server's name among the servers of one PostgreSQL store, unique among the live ones: it holds "
             "the leases of its services under it. [default: hostname:pid]")] = None,
    lease: Annotated[str, typer.Option(
        "--lease", envvar="STAGEWISE_LEASE",
        help="With PostgreSQL: the lease of a service as DURATION,RENEW-DEADLINE,RETRY: how long it lasts, when a "
             "holder that could not renew it stops acting, how often it is renewed.")] = "15s,10s,2s",
) -> None:
    """Run the API server, the dashboard and the controller (SIGHUP: read the settings file again)."""
    from stagewise.api.settings import load_settings

    fixed = _fixed(listen, log_level, log_format, tick)
    if reads not in ("open", "token"):
        raise _refuse(f"--reads {reads}: expected open or token")
    if windows is not None:
        _check_windows(windows)
    _check_store(store, state, open_it=not print_unit)
    lease_settings = _lease_settings(lease)
    if print_unit:
        _print_unit(state, fixed, settings, unit_user, low_ports, store)
        return
    try:
        in_force = load_settings(settings, fixed)
    except SettingsError as exc:
        for problem in exc.problems:
            err.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    from stagewise.api.server import serve

    try:
        serve(state, in_force, reread=lambda: load_settings(settings, fixed),
              reads="token" if reads == "token" else "open", windows_file=windows, store=store, name=name,
              leases=lease_settings)
    except OSError as exc:
        raise _refuse(f"cannot listen on {in_force.listen}: {exc.strerror or exc}") from None


def _lease_settings(text: str) -> Any:
    """`--lease DURATION,RENEW-DEADLINE,RETRY`, checked (controller/leases.py)."""
    from stagewise.controller.leases import LeaseSettings
    from stagewise.core.durations import parse_duration

    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 3:
            raise ValueError(f"expected DURATION,RENEW-DEADLINE,RETRY such as 15s,10s,2s, got {text!r}")
        seconds = [float(p) if p.replace(".", "", 1).isdigit() else parse_duration(p) for p in parts]
        return LeaseSettings(duration=seconds[0], renew_deadline=seconds[1], retry=seconds[2])
    except ValueError as exc:
        raise _refuse(f"--lease: {exc}") from None


def _check_windows(path: Path) -> None:
    """Refuse a shared windows file that does not load, each problem at file:line:column."""
    from stagewise.errors import SpecError
    from stagewise.spec import load_windows

    try:
        load_windows(path)
    except SpecError as exc:
        for p in exc.problems:
            err.print(str(p), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _check_store(store: str, state: Path, *, open_it: bool) -> None:
    """Refuse a `--store` that names no store; with `open_it`, also one that cannot be opened (unreachable, no such
    database, written by a newer stagewise), before anything starts. The password never shows."""
    from stagewise.errors import StagewiseError
    from stagewise.store import open_store
    from stagewise.store.locations import parse_location

    try:
        parse_location(store, state_dir=state)
    except StagewiseError as exc:
        raise _refuse(f"--store: {exc}") from None
    if open_it and store != "sqlite":  # the default is opened by the server as it always was
        try:
            open_store(store, state_dir=state).close()
        except StagewiseError as exc:
            raise _refuse(f"--store: {exc}") from None


def _print_unit(state: Path, fixed: dict[str, Any], settings: Path | None, user: str, low_ports: bool,
                store: str) -> None:
    from stagewise.api.settings import DEFAULT_LISTEN
    from stagewise.cli.systemd import systemd_unit

    passed = [] if store == "sqlite" else ["--store", store]
    for name in ("listen", "log_level", "log_format", "tick"):
        if fixed[name] is not None:
            passed += [f"--{name.replace('_', '-')}", str(fixed[name])]
    unit = systemd_unit(command=program(), state=state, listen=fixed["listen"] or DEFAULT_LISTEN,
                        settings=str(settings.absolute()) if settings is not None else None, user=user,
                        low_ports=low_ports, extra_args=passed)
    sys.stdout.write(unit)
