"""Shell completion: typer's scripts for bash, zsh and fish, and service names asked of the running server.

`stagewise completion SHELL` prints the script for a shell (typer's own, the
same `--show-completion` prints for the shell it detects). Pressing Tab then
runs `stagewise` with `_STAGEWISE_COMPLETE` set; where a service's name is
expected, `service_names` asks the server of the state directory in force
(`--state` if already typed, else `STAGEWISE_STATE`, else `./.stagewise`)
for its services, with a short timeout.

What it must never do: print anything but completions, or make the shell
wait. A server that is down, slow or refuses gives no completions, silently
and within `TIMEOUT` seconds.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from typer._completion_shared import get_completion_script

from stagewise.cli.client import default_state

PROG_NAME = "stagewise"
COMPLETE_VAR = "_STAGEWISE_COMPLETE"
TIMEOUT = 0.5
"""Seconds a completion may wait for the server: a person pressing Tab waits for it."""


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def register(app: typer.Typer) -> None:
    app.command(name="completion")(completion)


def completion(shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.")]) -> None:
    """Print the shell's completion script: service names complete from the running server.

    bash: stagewise completion bash > /etc/bash_completion.d/stagewise;
    zsh: stagewise completion zsh > "${fpath[1]}/_stagewise";
    fish: stagewise completion fish > ~/.config/fish/completions/stagewise.fish.
    """
    sys.stdout.write(get_completion_script(prog_name=PROG_NAME, complete_var=COMPLETE_VAR, shell=shell.value)
                     + "\n")


def service_names(state: Path) -> list[tuple[str, str]]:
    """The services the server of `state` knows, each with a word on its state; [] if it cannot say quickly."""
    try:
        url = json.loads((state / "server.json").read_text())["url"]
        answer = httpx.get(f"{url}/api/v1/services", timeout=TIMEOUT)
        services: list[dict[str, Any]] = answer.json() if answer.status_code == 200 else []
        return [(s["service"], _in_words(s)) for s in services]
    except (OSError, ValueError, KeyError, TypeError, httpx.HTTPError):
        return []  # no server, a stale server.json, a server that is slow or says something else: no completions


def _in_words(service: dict[str, Any]) -> str:
    delivery = service.get("delivery") or {}
    if service.get("phase") and service["phase"] not in ("Succeeded", "RolledBack", "Failed"):
        return f"{service['phase']}: {delivery.get('from') or '-'} → {delivery.get('to')}"
    return f"stable {service.get('stable') or '-'}"


def complete_service(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Typer's completion of a service argument."""
    given = ctx.params.get("state")
    state = Path(given) if given else default_state()
    return [(name, words) for name, words in service_names(state) if name.startswith(incomplete)]
