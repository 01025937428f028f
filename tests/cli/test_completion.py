"""Shell completion: typer's scripts, and service names completed from a live server.

The completions are asked the way each shell's script asks them — the
`_STAGEWISE_COMPLETE` variable with bash's `COMP_WORDS`/`COMP_CWORD`, or
typer's `_TYPER_COMPLETE_ARGS` for zsh and fish — of the real `stagewise`
program, against a real server that runs a real service; and once through a
real bash with the script sourced, as Tab would. A server that is down gives
no completions, quickly and silently.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stagewise.cli.completion import TIMEOUT
from tests.e2e.conftest import SERVICE, Stagewise
from tests.e2e.conftest import stagewise as stagewise  # the live server fixture, reused here

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROGRAM = Path(sys.executable).with_name("stagewise")
"""The console script of this environment, on PATH for the shells below."""


def run(*args: str, env: dict[str, str], state: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env, "PATH": f"{PROGRAM.parent}:{os.environ['PATH']}"}
    if state is not None:
        environment["STAGEWISE_STATE"] = str(state)
    return subprocess.run([str(PROGRAM), *args], capture_output=True, text=True, timeout=30, env=environment)


def bash_words(line: str, state: Path | None) -> list[str]:
    words = line.split(" ")
    result = run(env={"_STAGEWISE_COMPLETE": "complete_bash", "COMP_WORDS": line,
                      "COMP_CWORD": str(len(words) - 1)}, state=state)
    assert result.returncode == 0 and result.stderr == "", result
    return result.stdout.split()


@pytest.mark.parametrize(("shell", "mark"), [("bash", "complete -o default -F _stagewise_completion stagewise"),
                                             ("zsh", "compdef _stagewise_completion stagewise"),
                                             ("fish", "complete --command stagewise")])
def test_each_shell_gets_typers_script(shell: str, mark: str) -> None:
    result = run("completion", shell, env={})
    assert result.returncode == 0 and mark in result.stdout and "_STAGEWISE_COMPLETE=complete_" + shell in \
        result.stdout, result
    binary = shutil.which(shell)
    if binary is not None:  # bash is everywhere; zsh and fish where installed
        checked = subprocess.run([binary, "-n"] if shell != "fish" else [binary, "--no-execute"],
                                 input=result.stdout, capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr


def test_service_names_complete_from_the_running_server(stagewise: Stagewise) -> None:
    stagewise.apply("v1", {"full": {}}, replicas=1)
    assert stagewise.wait()["phase"] == "Succeeded"
    state = stagewise.state
    for verb in ("promote", "abort", "status", "history", "delete", "undo"):
        assert bash_words(f"stagewise {verb} s", state) == [SERVICE], verb
    assert bash_words("stagewise promote x", state) == []
    assert bash_words(f"stagewise promote --state {state} ", None) == [SERVICE], "--state typed before the name"
    assert bash_words("stat", state) == ["status"], "commands complete as ever"

    zsh = run(env={"_STAGEWISE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "stagewise abort "}, state=state)
    assert zsh.returncode == 0 and f'"{SERVICE}":"stable v1"' in zsh.stdout, zsh
    fish = run(env={"_STAGEWISE_COMPLETE": "complete_fish", "_TYPER_COMPLETE_ARGS": "stagewise abort ",
                    "_TYPER_COMPLETE_FISH_ACTION": "get-args"}, state=state)
    assert fish.returncode == 0 and fish.stdout.splitlines() == [f"{SERVICE}\tstable v1"], fish

    # A real bash, the script sourced, the completion function called as Tab calls it.
    script = run("completion", "bash", env={}).stdout
    tab = subprocess.run(
        ["bash", "--norc", "-c", script + "\nCOMP_WORDS=(stagewise pause s); COMP_CWORD=2; "
         "_stagewise_completion stagewise s pause; printf '%s\\n' \"${COMPREPLY[@]}\""],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "PATH": f"{PROGRAM.parent}:{os.environ['PATH']}", "STAGEWISE_STATE": str(state)})
    assert tab.returncode == 0 and tab.stdout.split() == [SERVICE], tab

    stagewise.stop()  # no server: no names, and no error
    assert bash_words("stagewise promote s", state) == []


def test_a_server_that_does_not_answer_gives_no_completions(tmp_path: Path) -> None:
    with socket.socket() as hung:  # accepts connections (the kernel does) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        (tmp_path / "server.json").write_text(json.dumps({"url": f"http://127.0.0.1:{hung.getsockname()[1]}"}))
        started = time.monotonic()
        assert bash_words("stagewise promote s", tmp_path) == []
        assert time.monotonic() - started < 30 * TIMEOUT, "the shell waited for longer than the timeout allows"
