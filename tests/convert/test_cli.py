"""`stagewise convert` on the command line: files in, specs out, notes on stderr, exit codes 0 and 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stagewise.spec import load_specs
from tests.convert.cases import CASES, DATA

pytestmark = pytest.mark.timeout(120)


def run(*args: str, cwd: Path = DATA) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stagewise", "convert", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_rollout_with_its_templates_converts_with_notes_on_stderr(tmp_path: Path) -> None:
    done = run(*CASES["rollout-analysis-step"], "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "argo-rollouts/examples/rollout-analysis-step.yaml:12:3: not converted: spec.revisionHistoryLimit" \
        in done.stderr
    assert "argo-rollouts/examples/rollout-analysis-step.yaml: 11 fields mapped, 4 not mapped" in done.stderr
    assert "Traceback" not in done.stderr
    [spec] = load_specs(tmp_path / "rollout-analysis-step.yaml")
    assert spec.spec.strategy.name == "canary"


def test_to_argo_and_back_on_the_command_line(tmp_path: Path) -> None:
    first = run(*CASES["kubernetes-blue-green"], "--out", str(tmp_path))
    assert first.returncode == 0, first.stderr
    to_argo = run("--to", "argo", str(tmp_path / "podinfo.yaml"), "--out", str(tmp_path / "argo"))
    assert to_argo.returncode == 0, to_argo.stderr
    text = (tmp_path / "argo" / "podinfo.argo.yaml").read_text()
    assert "kind: Rollout" in text and text.count("kind: Service") == 2
    back = run(str(tmp_path / "argo" / "podinfo.argo.yaml"))
    assert back.returncode == 0, back.stderr
    assert "prePromotionAnalysis" in back.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["argo-rollouts/examples/analysis-templates.yaml"],
     "argo-rollouts/examples/analysis-templates.yaml:6:1: expected an Argo Rollouts Rollout"),
    (["argo-rollouts/manifests/crds/rollout-crd.yaml"], "found CustomResourceDefinition"),
    (["no-such-file.yaml"], "no-such-file.yaml:1:1: cannot read the file"),
    (["--to", "argo", "argo-rollouts/examples/rollout-canary.yaml"], "use --to stagewise"),
])
def test_input_that_is_no_rollout_or_canary_exits_2_with_a_message(args: list[str], expected: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_yaml_that_does_not_parse_exits_2_with_its_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nspec: [\n")
    done = run(str(bad))
    assert done.returncode == 2 and f"{bad}:4:1: YAML syntax error" in done.stderr


def test_converting_a_stagewise_spec_to_stagewise_says_what_to_do(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    assert subprocess.run([sys.executable, "-m", "stagewise", "init", str(spec)], capture_output=True,
                          timeout=60, check=False).returncode == 0
    done = run(str(spec))
    assert done.returncode == 2 and "--to argo" in done.stderr


def test_an_invalid_spec_to_argo_is_reported_where_validate_reports_it(tmp_path: Path) -> None:
    spec = tmp_path / "two.yaml"
    spec.write_text("apiVersion: stagewise.dev/v1alpha1\nkind: Service\nmetadata: {name: a}\n"
                    "spec: {listen: '127.0.0.1:1', release: {version: v, run: {command: [x]}}}\n---\n"
                    "apiVersion: stagewise.dev/v1alpha1\nkind: Service\nmetadata: {name: b}\nspec:\n"
                    "  listen: 127.0.0.1:2\n  replicas: 0\n  release: {version: v, run: {command: [x]}}\n")
    done = run("--to", "argo", str(spec))
    assert done.returncode == 2
    assert f"{spec}:11:13: spec.replicas: expected a number at least 1" in done.stderr
