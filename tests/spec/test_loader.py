"""The spec loader: valid specs become the right models; every malformed one a SpecError at file:line:column.

Each file under `malformed/` is one way a person (or a tool, or an attacker) can
get a spec wrong; the table below pins the exact position and the words a user
reads, so a change that points one line off, or drops the suggestion of a valid
choice, fails here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from stagewise.core.spec import PhasedCohorts, PhasedStrategy, PhasedWaves, ServiceSpec
from stagewise.errors import Problem, SpecError
from stagewise.spec import EXAMPLE_SPEC, MAX_BYTES, load_spec, load_spec_text, load_specs, loader

pytestmark = pytest.mark.timeout(30)

HERE = Path(__file__).parent
VALID = HERE / "valid"
MALFORMED = HERE / "malformed"


def problems_of(call: object, *args: object) -> list[Problem]:
    assert callable(call)
    with pytest.raises(SpecError) as caught:
        call(*args)
    assert caught.value.problems, "a SpecError must say what is wrong"
    return caught.value.problems


# --- valid specs -------------------------------------------------------------------------


def test_full() -> None:
    spec = load_spec(VALID / "full.yaml")
    assert spec.name == "ledger"
    assert spec.spec.strategy.name == "full"
    assert spec.spec.replicas == 3
    assert spec.spec.release.version == "2024.06.1"
    assert spec.spec.release.run.command == ["./ledger", "--port", "{port}"]


def test_phased_waves() -> None:
    spec = load_spec(VALID / "phased_waves.yaml")
    strategy = spec.spec.strategy
    assert isinstance(strategy, PhasedStrategy) and isinstance(strategy.phased, PhasedWaves)
    phased = strategy.phased
    assert phased.waves == [1, "25%", "100%"]
    assert phased.bake == 30.0
    assert phased.max_unavailable == "50%"
    assert phased.max_fail_percent == 10
    assert phased.analysis is not None and phased.analysis.templates == ["errors"]
    assert spec.spec.listen == "[::1]:8081"
    assert spec.spec.platform.kind == "ssh" and len(spec.spec.platform.hosts) == 4
    assert spec.spec.release.readiness.tcp and spec.spec.release.readiness.timeout == 60.0
    assert spec.spec.analysis["errors"].judge == "threshold"


def test_phased_cohorts() -> None:
    spec = load_spec(VALID / "phased_cohorts.yaml")
    strategy = spec.spec.strategy
    assert isinstance(strategy, PhasedStrategy) and isinstance(strategy.phased, PhasedCohorts)
    phased = strategy.phased
    assert phased.cohorts.key.header == "X-User-Id"
    assert phased.cohorts.steps == [1, 2, 5, 10, 20, 50, 100]
    assert phased.bake == 300.0
    assert spec.spec.router.kind == "haproxy"


def test_canary_with_background_analysis() -> None:
    spec = load_spec(VALID / "canary_background.yaml")
    canary = spec.spec.strategy.canary
    assert canary is not None
    kinds = [
        next(k for k, v in step.model_dump(by_alias=True).items() if v is not None) for step in canary.steps
    ]
    assert kinds == ["setWeight", "analysis", "setHeaderRoute", "setWeight", "pause", "setWeight", "pause"]
    assert canary.steps[1].analysis is not None and canary.steps[1].analysis.duration == 120.0
    route = canary.steps[2].set_header_route
    assert route is not None and route.match[0].header_name == "X-Canary"
    assert route.match[0].header_value.exact == "yes"
    assert canary.steps[4].pause is not None and canary.steps[4].pause.duration == 60.0
    assert canary.steps[6].pause is not None and canary.steps[6].pause.duration is None
    assert canary.analysis is not None
    assert canary.analysis.templates == ["errors"] and canary.analysis.starting_step == 1
    assert spec.spec.analysis["latency"].no_data == "fail"
    assert spec.spec.progress_deadline == 600.0
    assert spec.metadata.labels == {"team": "payments"}


def test_blue_green() -> None:
    spec = load_spec(VALID / "blue_green.yaml")
    blue_green = spec.spec.strategy.blue_green
    assert spec.spec.strategy.name == "blue-green"
    assert blue_green is not None
    assert blue_green.auto_promotion is not None and blue_green.auto_promotion.after == 300.0
    assert blue_green.preview.header == {"X-Preview": "1"}
    assert blue_green.pre_promotion_analysis is not None
    assert blue_green.pre_promotion_analysis.duration == 60.0
    assert blue_green.scale_down_delay == 600.0
    assert spec.spec.analysis["smoke"].provider == "http"


def test_several_documents_with_a_trailing_separator() -> None:
    specs = load_specs(VALID / "two_services.yaml")
    assert [s.name for s in specs] == ["front", "back"]


def test_anchors_aliases_and_merge_keys() -> None:
    spec = load_spec(VALID / "anchors_and_merge.yaml")
    latency = spec.spec.analysis["latency"]
    assert (latency.metric, latency.alpha, latency.judge) == ("latency", 0.01, "sequential")
    assert spec.spec.analysis["errors"].metric == "error-rate"
    canary = spec.spec.strategy.canary
    assert canary is not None and canary.analysis is not None
    assert canary.analysis.templates == ["errors", "latency"]


def test_text_bytes_and_path_agree() -> None:
    text = (VALID / "full.yaml").read_text()
    assert load_spec_text(text) == load_spec_text(text.encode()) == load_spec(str(VALID / "full.yaml"))


def test_crlf_and_byte_order_mark_are_read_like_plain_text() -> None:
    text = (MALFORMED / "unknown_field.yaml").read_text()
    plain = problems_of(load_spec_text, text)
    windows = problems_of(load_spec_text, b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert [(p.line, p.column) for p in plain] == [(p.line, p.column) for p in windows] == [(7, 3)]


def test_example_spec_loads_and_runs_the_sample_service() -> None:
    spec = load_spec_text(EXAMPLE_SPEC, "stagewise.yaml")
    assert spec.spec.strategy.name == "canary"
    assert spec.spec.release.run.command == [
        "python3", "-m", "stagewise.examples.sample_service", "--port", "{port}", "--version", "v1",
    ]


def test_example_spec_explains_every_field() -> None:
    """Each field, where it first appears, has a comment on its line or just above it."""
    seen: set[str] = set()
    previous = ""
    for line in EXAMPLE_SPEC.splitlines():
        body = line.split("#", 1)[0].strip().removeprefix("- ")
        if ":" in body and not body.startswith(("[", "{")):
            key = body.split(":", 1)[0]
            if key not in seen:
                assert "#" in line or previous.strip().startswith("#"), f"no comment explains {key!r}"
            seen.add(key)
        previous = line
    assert len(seen) > 30


# --- malformed specs, one file each ------------------------------------------------------

CASES: list[tuple[str, int, int, str]] = [
    ("yaml_syntax.yaml", 6, 34, "YAML syntax error: mapping values are not allowed here"),
    ("empty.yaml", 1, 1, "the file is empty; expected a Service spec"),
    ("binary.yaml", 2, 11, "byte 0xFF is not valid UTF-8"),
    ("utf16.yaml", 1, 1, "the file is UTF-16; save it as UTF-8"),
    ("wrong_type_replicas.yaml", 7, 13, "spec.replicas: expected a whole number, got the text 'four'"),
    ("unknown_field.yaml", 7, 3, "spec: unknown field 'replica'; did you mean 'replicas'?"),
    ("snake_case_field.yaml", 11, 3, "unknown field 'progress_deadline'; did you mean 'progressDeadline'?"),
    ("unknown_strategy.yaml", 12, 5, "unknown field 'bluegreen'; did you mean 'blueGreen'? "
     "(valid fields here: full, phased, canary, blueGreen)"),
    ("two_strategies.yaml", 11, 3, "spec.strategy: strategy takes exactly one of full, phased, canary, "
     "blueGreen; got full and canary"),
    ("weight_above_100.yaml", 15, 22, "[1].setWeight: expected a number at most 100, got the number 150"),
    ("weight_negative.yaml", 13, 27, "steps[0].setWeight: expected a number at least 0, got the number -5"),
    ("metrics_listen_with_nginx.yaml", 7, 3, "metricsListen is for kind: builtin or haproxy"),
    ("wave_zero.yaml", 14, 18, "waves[1]: a wave holds at least one instance, got 0"),
    ("wave_negative.yaml", 16, 11, "waves[1]: a wave holds at least one instance, got -2"),
    ("wave_above_100_percent.yaml", 14, 20, "a wave percentage is above 0% and at most 100%, got '150%'"),
    ("missing_command.yaml", 9, 5, "spec.release.run: missing required field 'command'"),
    ("missing_spec.yaml", 1, 1, "missing required field 'spec'"),
    ("null_release.yaml", 7, 3, "spec.release: expected a mapping with fields version, run, readiness"),
    ("bad_duration.yaml", 15, 29, "pause.duration: expected a duration such as 500ms, 30s"),
    ("duplicate_analysis_names.yaml", 14, 5, "duplicate key 'errors': first at line 12, column 5, "
     "again at line 14, column 5"),
    ("unknown_analysis_template.yaml", 15, 22, "analysis template 'erors' is not defined in spec.analysis"),
    ("bad_listen.yaml", 6, 11, "spec.listen: expected host:port such as 127.0.0.1:8080, got 'localhost'"),
    ("not_a_mapping.yaml", 2, 1, "expected a mapping with apiVersion, kind, metadata and spec"),
    ("bad_api_version.yaml", 1, 13, "apiVersion: expected 'stagewise.dev/v1alpha1', got the text"),
    ("wrong_kind.yaml", 2, 7, "kind: expected 'Service', got the text 'Deployment'"),
    ("unknown_router_kind.yaml", 7, 18, "expected one of 'builtin', 'haproxy', 'nginx', got the text "
     "'haproxi'; did you mean 'haproxy'?"),
    ("tab_indentation.yaml", 4, 1, "YAML indents with spaces, never tabs"),
    ("canary_step_two_keys.yaml", 14, 11, "steps[0]: a canary step has exactly one of setWeight"),
    ("cohort_steps_shrinking.yaml", 15, 9, "cohorts.steps: cohort steps must grow strictly"),
    ("cohort_key_both.yaml", 14, 9, "cohorts.key: a cohort key is exactly one of header or cookie"),
    ("phased_both_forms.yaml", 12, 5, "spec.strategy.phased: phased takes exactly one of waves or cohorts"),
    ("starting_step_out_of_range.yaml", 12, 5, "analysis.startingStep 2 is past the last step"),
    ("empty_command.yaml", 10, 7, "spec.release.run.command: expected at least 1 item, got an empty list"),
    ("command_as_string.yaml", 10, 16, "command: expected a list such as [a, b]"),
    ("env_number.yaml", 12, 18, "env.WORKERS: expected text, got the number 4; put it in quotes (\"4\")"),
    ("version_as_number.yaml", 8, 14, "expected text, got the number 1.1; put it in quotes (\"1.10\")"),
    ("bad_metadata_name.yaml", 4, 9, "metadata.name: expected a DNS label"),
    ("alpha_out_of_range.yaml", 12, 21, "errors.alpha: expected a number less than 1, got the number 5"),
    ("non_string_key.yaml", 7, 5, "metadata.labels: a key must be text, got 404; put it in quotes"),
    ("unsupported_tag.yaml", 10, 16, "the YAML tag !!python/object/apply:os.system is not supported"),
    ("undefined_alias.yaml", 10, 16, "found undefined alias 'cmd'"),
    ("alias_cycle.yaml", 3, 11, "the alias *meta refers to a value that contains it"),
    ("alias_bomb.yaml", 2, 1, "expands to more than 100000 values through aliases"),
    ("deeply_nested.yaml", 4, 73, "nested more than 64 levels deep"),
    ("two_documents.yaml", 8, 1, "expected exactly one Service spec, but the file holds 2 YAML documents"),
    ("unclosed_flow.yaml", 11, 1, "expected ',' or ']', but got the end of the file "
     "(while parsing a flow sequence at line 10, column 16)"),
    ("yaml_version.yaml", 1, 7, "YAML version 1.3 is not supported; write %YAML 1.2"),
    # each provider's template takes its own fields: a URL without `provider: http` is not silently ignored
    ("url_without_provider.yaml", 12, 13, "spec.analysis.smoke: unknown field 'url' for provider router; "
     "it goes with provider: http"),
    ("unknown_provider.yaml", 12, 24, "spec.analysis.errors.provider: expected one of 'router', 'prometheus', "
     "'http', 'command', got the text 'promethus'; did you mean 'prometheus'?"),
    ("http_without_url.yaml", 12, 5, "spec.analysis.smoke: missing required field 'url' (http: the URL probed"),
    ("snake_case_strategy.yaml", 12, 5, "spec.strategy: unknown field 'blue_green'; did you mean 'blueGreen'? "
     "(valid fields here: full, phased, canary, blueGreen)"),
    ("canary_step_not_a_mapping.yaml", 14, 11, "steps[0]: expected a mapping with fields setWeight, pause, "
     "analysis, setHeaderRoute, approval, got the number 10"),
]


@pytest.mark.parametrize(("name", "line", "column", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_malformed_spec_is_reported_at_its_position(name: str, line: int, column: int, fragment: str) -> None:
    path = MALFORMED / name
    problems = problems_of(load_spec, path)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert (problem.file, problem.line, problem.column) == (str(path), line, column), str(problem)
    assert fragment in str(problem)
    assert str(problem).startswith(f"{path}:{line}:{column}: ")


def test_every_malformed_file_has_an_expectation() -> None:
    assert sorted(p.name for p in MALFORMED.iterdir()) == sorted(c[0] for c in CASES)
    assert len(CASES) >= 24


def test_all_problems_of_a_document_are_reported_in_order() -> None:
    text = (VALID / "canary_background.yaml").read_text()
    text = text.replace("replicas: 4", "replicas: 0").replace("setWeight: 25", "setWeight: 125")
    text = text.replace("kind: local", "kind: docker").replace("progressDeadline", "progressDedline")
    problems = problems_of(load_spec_text, text, "c.yaml")
    assert [(p.line, p.field) for p in problems] == [
        (9, "spec.platform.kind"),
        (10, "spec.replicas"),
        (26, "spec.strategy.canary.steps[3].setWeight"),
        (34, "spec"),
    ]
    assert "did you mean 'progressDeadline'?" in problems[3].message


def test_problems_of_several_documents_are_reported_together(tmp_path: Path) -> None:
    text = (VALID / "two_services.yaml").read_text().replace("8000", "80000").replace("back", "Back")
    (tmp_path / "two.yaml").write_text(text)
    problems = problems_of(load_specs, tmp_path / "two.yaml")
    assert [(p.line, p.field) for p in problems] == [(6, "spec.listen"), (11, "metadata.name")]


def test_missing_file(tmp_path: Path) -> None:
    (problem,) = problems_of(load_spec, tmp_path / "nope.yaml")
    assert str(problem) == f"{tmp_path / 'nope.yaml'}:1:1: cannot read the spec: the file does not exist"


def test_directory(tmp_path: Path) -> None:
    (problem,) = problems_of(load_specs, tmp_path)
    assert (problem.line, problem.column) == (1, 1)
    assert "this is a directory, not a file" in problem.message


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text((VALID / "full.yaml").read_text())
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the OS answer as it would for anyone else

        def refuse(*args: object, **kwargs: object) -> NoReturn:
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(loader, "open", refuse, raising=False)
    (problem,) = problems_of(load_spec, path)
    assert str(problem) == f"{path}:1:1: cannot read the spec: permission denied"


def test_path_that_cannot_name_a_file() -> None:
    (problem,) = problems_of(load_spec, "spec\0.yaml")
    assert (problem.line, problem.column) == (1, 1)
    assert problem.message.startswith("cannot read the spec: ")


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# padding\n" * (MAX_BYTES // 10 + 1))
    (problem,) = problems_of(load_spec, path)
    assert (problem.line, problem.column) == (1, 1)
    assert "larger than 1 MiB" in problem.message
    (problem,) = problems_of(load_spec_text, "a: b\n" * MAX_BYTES)
    assert "larger than 1 MiB" in problem.message


def test_str_of_spec_error_lists_every_problem() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text("apiVersion: 1\nkind: Service\nmetadata: {name: x}\n", "s.yaml")
    assert str(caught.value) == (
        "s.yaml:1:1: missing required field 'spec'\n"
        "s.yaml:1:13: apiVersion: expected 'stagewise.dev/v1alpha1', got the number 1"
    )


def test_returned_models_are_service_specs() -> None:
    for path in sorted(VALID.glob("*.yaml")):
        assert all(isinstance(spec, ServiceSpec) for spec in load_specs(path))
