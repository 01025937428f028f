"""The command line: exit codes, and never a traceback for bad input."""

from __future__ import annotations

import errno
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from stagewise.api.server import bind
from stagewise.cli.main import app

MALFORMED = Path(__file__).parent.parent / "spec" / "malformed"
VALID = Path(__file__).parent.parent / "spec" / "valid"
POSITION = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): ", re.M)
runner = CliRunner()


def stagewise(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stagewise", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


MALFORMED_FILES = sorted(p for p in MALFORMED.iterdir() if p.name != "two_documents.yaml")


def test_there_are_many_malformed_specs() -> None:
    assert len(MALFORMED_FILES) >= 20


@pytest.mark.parametrize("path", MALFORMED_FILES, ids=lambda p: p.stem)
def test_validate_names_file_line_column_for_each_malformed_spec(path: Path) -> None:
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    positions = POSITION.findall(result.stderr)
    assert positions and all(f == str(path) for f, _, _ in positions), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_validate_in_a_real_process_exits_2_with_positions() -> None:
    files = [str(p) for p in MALFORMED_FILES[:10]]
    result = stagewise("validate", *files)
    assert result.returncode == 2
    assert len(POSITION.findall(result.stderr)) >= 10
    assert "Traceback" not in result.stderr


def test_validate_accepts_valid_specs_and_the_example(tmp_path: Path) -> None:
    assert stagewise("init", str(tmp_path / "s.yaml")).returncode == 0
    result = stagewise("validate", str(tmp_path / "s.yaml"), *map(str, sorted(VALID.iterdir())))
    assert result.returncode == 0, result.stderr
    assert stagewise("init", str(tmp_path / "s.yaml")).returncode == 2, "init must not overwrite"


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                         st.text(max_size=20))
yaml_docs = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["apiVersion", "kind", "metadata", "spec", "name",
                                                             "listen", "replicas", "release", "strategy",
                                                             "canary", "steps", "setWeight", "x"]),
                                            inner, max_size=5)),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=yaml_docs, noise=st.text(max_size=40))
def test_validate_never_shows_a_traceback(tmp_path: Path, doc: object, noise: str) -> None:
    import json

    path = tmp_path / "random.yaml"
    path.write_text(json.dumps(doc) + ("\n" + noise if noise else ""), encoding="utf-8", errors="surrogatepass")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code == 2:
        assert POSITION.search(result.stderr), result.stderr


def test_verbs_without_a_server_exit_3(tmp_path: Path) -> None:
    for args in (["status"], ["promote", "x"], ["abort", "x"], ["history", "x"]):
        result = stagewise(*args, "--state", str(tmp_path))
        assert result.returncode == 3, (args, result.stderr)
        assert "stagewise server" in result.stderr


def test_apply_of_a_bad_spec_exits_2_before_calling_the_server(tmp_path: Path) -> None:
    result = stagewise("apply", str(MALFORMED / "wave_zero.yaml"), "--state", str(tmp_path))
    assert result.returncode == 2
    assert POSITION.search(result.stderr)


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1:http", "127.0.0.1:70000", ":"])
def test_server_with_a_malformed_listen_address_exits_2_without_a_traceback(tmp_path: Path, listen: str) -> None:
    result = stagewise("server", "--listen", listen, "--state", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert repr(listen) in result.stderr and "expected host:port" in result.stderr


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1:http", "127.0.0.1:70000"])
def test_bind_refuses_a_malformed_address_as_the_bind_failure_it_is(listen: str) -> None:
    """`serve` and its callers report an OSError as "cannot listen on ..."; a malformed address is one too."""
    with pytest.raises(OSError, match="expected host:port") as refused:
        bind(listen)
    assert refused.value.errno == errno.EINVAL
