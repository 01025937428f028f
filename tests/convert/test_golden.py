"""Golden tests: real Argo Rollouts and Flagger manifests, converted, compared with checked-in outputs.

The inputs are upstream files copied at pinned commits (tests/data/*/README.md).
Each output must equal its golden file byte for byte, pass the spec loader
(`stagewise validate`), and account for every field of the input: the counts
of fields mapped and not mapped per file are printed and pinned here, so a
change in what maps is a visible change of this table.

Set STAGEWISE_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change.
"""

from __future__ import annotations

import os

import pytest

from stagewise.convert import to_stagewise
from stagewise.convert.ledger import UNKNOWN_FIELD, Tally
from stagewise.spec import load_spec_text
from tests.convert.cases import CASES, GOLDEN, inputs

pytestmark = pytest.mark.timeout(60)

TALLIES: dict[str, dict[str, tuple[int, int]]] = {
    "rollout-canary": {"argo-rollouts/examples/rollout-canary.yaml": (15, 4)},
    "rollout-bluegreen": {"argo-rollouts/examples/rollout-bluegreen.yaml": (18, 10)},
    "rollout-analysis-step": {"argo-rollouts/examples/rollout-analysis-step.yaml": (11, 4),
                              "argo-rollouts/examples/analysis-templates.yaml": (10, 16),
                              "argo-rollouts/examples/cluster-analysis-templates.yaml": (11, 3)},
    "rollout-background-analysis": {"argo-rollouts/examples/rollout-background-analysis.yaml": (10, 4),
                                    "argo-rollouts/examples/analysis-templates.yaml": (10, 16)},
    "notifications-rollout-canary": {"argo-rollouts/examples/notifications/rollout-canary.yaml": (19, 22)},
    "linkerd-canary": {"flagger/artifacts/examples/linkerd-canary.yaml": (29, 11)},
    "linkerd-canary-steps": {"flagger/artifacts/examples/linkerd-canary-steps.yaml": (38, 11)},
    "istio-canary": {"flagger/artifacts/examples/istio-canary.yaml": (29, 18)},
    "istio-abtest": {"flagger/artifacts/examples/istio-abtest.yaml": (26, 20)},
    "kubernetes-blue-green": {"flagger/docs/gitbook/tutorials/kubernetes-blue-green-canary.yaml": (25, 9)},
}
"""Per case and input file: (fields mapped, fields not mapped), every document of the file counted (the
`pass` template of analysis-templates.yaml, which no example names, is 13 fields not mapped)."""


@pytest.mark.parametrize("case", list(CASES))
def test_upstream_manifest_converts_to_its_golden_spec(case: str) -> None:
    conversion = to_stagewise(inputs(case))
    assert len(conversion.outputs) == 1
    output = conversion.outputs[0]
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("STAGEWISE_UPDATE_GOLDEN"):
        golden.write_text(output.text, encoding="utf-8")
    assert output.text == golden.read_text(encoding="utf-8"), f"{case}: output differs from {golden}"
    load_spec_text(output.text, f"{case}.yaml")  # raises SpecError with file:line:column if invalid
    counts = {file: (t.mapped, t.not_mapped) for file, t in conversion.tallies.items()}
    for file, (mapped, not_mapped) in counts.items():
        print(f"{case}: {file}: {mapped} fields mapped, {not_mapped} not mapped")
    assert counts == TALLIES[case]


@pytest.mark.parametrize("case", list(CASES))
def test_every_field_not_mapped_is_named_where_it_is_written(case: str) -> None:
    conversion = to_stagewise(inputs(case))
    output = conversion.outputs[0]
    dropped = [n for n in output.notes if not n.mapped]
    assert sum(t.not_mapped for t in output.tallies.values()) >= len(dropped) > 0
    for note in output.notes:
        assert note.file in CASES[case] and note.line >= 1 and note.column >= 1 and note.message
        assert str(note) in output.text, "every note is in the output's header comment"
    # a field the converter does not know at all is a gap in it, not in the input: the upstream examples have none
    assert not [n for n in output.notes if n.message == UNKNOWN_FIELD], [str(n) for n in output.notes]


def test_a_template_referenced_by_nobody_is_reported_as_such() -> None:
    conversion = to_stagewise(inputs("rollout-background-analysis"))
    unused = [n for n in conversion.notes if "not referenced" in n.message]
    assert [(n.file, n.line) for n in unused] == [("argo-rollouts/examples/analysis-templates.yaml", 6)]
    assert conversion.tallies["argo-rollouts/examples/analysis-templates.yaml"] == Tally(10, 16)


def test_what_the_examples_say_is_what_the_specs_do() -> None:
    """Spot checks of meaning, beyond the golden text: pauses in seconds, weights, analysis, blue-green."""
    from ruamel.yaml import YAML

    def spec(case: str) -> dict:  # type: ignore[type-arg]
        data: dict = YAML(typ="safe").load(to_stagewise(inputs(case)).outputs[0].text)  # type: ignore[type-arg]
        return data["spec"]

    canary = spec("rollout-canary")["strategy"]["canary"]["steps"]
    assert canary[:4] == [{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}, {"pause": {"duration": "40s"}}]
    blue_green = spec("rollout-bluegreen")["strategy"]["blueGreen"]
    assert "autoPromotion" not in blue_green and blue_green["preview"] == {"listen": "127.0.0.1:81"}
    step = spec("rollout-analysis-step")
    assert step["strategy"]["canary"]["steps"][1] == {"analysis": {"templates": ["random-fail", "always-pass"]}}
    assert step["analysis"]["always-pass"] == {"provider": "command", "args": ["sh", "-c", "exit 0"],
                                               "judge": "threshold", "failureLimit": 2, "interval": "5s"}
    weights = [s["setWeight"] for s in spec("linkerd-canary")["strategy"]["canary"]["steps"] if "setWeight" in s]
    assert weights == list(range(5, 55, 5))
    steps = [s["setWeight"] for s in spec("linkerd-canary-steps")["strategy"]["canary"]["steps"] if "setWeight" in s]
    assert steps == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]
    bg = spec("kubernetes-blue-green")
    assert bg["strategy"]["blueGreen"]["prePromotionAnalysis"]["duration"] == "5m"  # 10 iterations of 30s
    assert bg["analysis"]["request-success-rate"]["thresholdRange"] == {"max": 0.01}
    assert bg["progressDeadline"] == "1m"
