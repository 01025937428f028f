"""The upstream manifests the golden tests convert, and how to read them (paths relative to tests/data)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
GOLDEN = DATA / "convert"
ARGO = "argo-rollouts/examples/"
FLAGGER = "flagger/"

CASES: dict[str, list[str]] = {
    "rollout-canary": [ARGO + "rollout-canary.yaml"],
    "rollout-bluegreen": [ARGO + "rollout-bluegreen.yaml"],
    "rollout-analysis-step": [ARGO + "rollout-analysis-step.yaml", ARGO + "analysis-templates.yaml",
                              ARGO + "cluster-analysis-templates.yaml"],
    "rollout-background-analysis": [ARGO + "rollout-background-analysis.yaml", ARGO + "analysis-templates.yaml"],
    "notifications-rollout-canary": [ARGO + "notifications/rollout-canary.yaml"],
    "linkerd-canary": [FLAGGER + "artifacts/examples/linkerd-canary.yaml"],
    "linkerd-canary-steps": [FLAGGER + "artifacts/examples/linkerd-canary-steps.yaml"],
    "istio-canary": [FLAGGER + "artifacts/examples/istio-canary.yaml"],
    "istio-abtest": [FLAGGER + "artifacts/examples/istio-abtest.yaml"],
    "kubernetes-blue-green": [FLAGGER + "docs/gitbook/tutorials/kubernetes-blue-green-canary.yaml"],
}
"""Golden case → the files given together on one command line (a Rollout with the files of its templates)."""


def inputs(case: str) -> list[tuple[str, str]]:
    """(filename, text) of a case, named relative to tests/data so that golden headers do not depend on cwd."""
    return [(name, (DATA / name).read_text(encoding="utf-8")) for name in CASES[case]]
