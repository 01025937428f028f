"""The version is written once, in pyproject.toml, and every place that shows it reads it from there."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import httpx

import stagewise
from stagewise.api.server import create_app
from tests.dashboard.conftest import Server
from tests.dashboard.conftest import live as live  # the live server fixture, reused here

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"


def pyproject_version() -> str:
    version: str = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    return version


def test_the_package_says_the_version_of_pyproject() -> None:
    assert stagewise.version() == stagewise.__version__ == pyproject_version()


def test_stagewise_version_prints_it() -> None:
    result = subprocess.run([sys.executable, "-m", "stagewise", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"stagewise {pyproject_version()}\n"


def test_the_openapi_document_and_the_dashboard_say_it(tmp_path: Path, live: Server) -> None:
    assert create_app(tmp_path).openapi()["info"]["version"] == pyproject_version()
    page = httpx.get(f"{live.url}/", timeout=10)
    assert f'<span class="version" title="stagewise version">{pyproject_version()}</span>' in page.text
