"""`stagewise convert`: Argo Rollouts and Flagger manifests in, stagewise specs out — and stagewise to Argo.

    to_stagewise(inputs)    Rollouts (with their AnalysisTemplates and Services) and Canaries → Service specs
    to_argo(inputs)         Service specs → a Rollout, its AnalysisTemplates and its two Services each

Inputs are (filename, text) pairs; outputs are YAML text whose header lists
every field that was not converted, and why, at file:line:column (`Note`), with
the count of fields mapped and not per input file (`Tally`). A converted
stagewise spec is checked by the spec loader before it is returned, so it
passes `stagewise validate`.

The converters read and write the spec *documents* (the loader's YAML shape),
never the models' attributes, so a change inside `core.spec` that keeps the
format keeps them working. This layer sits beside the advisor and the
simulator: it imports `spec`, `core` and `errors`, reads no file and runs
nothing; the CLI reads and writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stagewise.convert.argo_in import convert_rollout
from stagewise.convert.flagger_in import convert_canary
from stagewise.convert.ledger import Note, Tally
from stagewise.convert.render import dump_documents, header
from stagewise.convert.sources import ARGO_GROUP, FLAGGER_GROUP, STAGEWISE_API, Index, Source, read_sources
from stagewise.errors import Problem, SpecError
from stagewise.spec import load_spec_text


@dataclass(frozen=True)
class Output:
    """One converted file: a stagewise spec, or a Rollout with its AnalysisTemplates and Services."""

    name: str
    """The service's name; the CLI writes `<name>.yaml` (stagewise) or `<name>.argo.yaml`."""
    text: str
    notes: list[Note]
    tallies: dict[str, Tally]
    """Per input file this output read: fields mapped and not mapped."""


@dataclass(frozen=True)
class Conversion:
    outputs: list[Output]
    notes: list[Note] = field(default_factory=list)
    """Every note of every input document, including documents no output used."""
    tallies: dict[str, Tally] = field(default_factory=dict)
    """Per input file: fields mapped and not mapped."""


TARGET_HINT = ("expected an Argo Rollouts Rollout (apiVersion argoproj.io/v1alpha1, kind Rollout) or a Flagger "
               "Canary (apiVersion flagger.app/v1beta1, kind Canary)")


def to_stagewise(inputs: list[tuple[str, str]]) -> Conversion:
    """Every Rollout and Canary of `inputs` as a stagewise Service spec; SpecError when there is none."""
    index = read_sources(inputs)
    targets = index.of(ARGO_GROUP, "Rollout") + index.of(FLAGGER_GROUP, "Canary")
    if not targets:
        raise SpecError(_no_target(index, TARGET_HINT + (
            "; this is a stagewise spec already — to write Argo Rollouts use --to argo"
            if index.of(STAGEWISE_API, "Service") else "")))
    converted: list[tuple[Source, dict[str, Any], list[Source]]] = []
    for target in targets:
        target.used = True
        if target.kind == "Rollout":
            doc, used = convert_rollout(target, index)
        else:
            doc, used = convert_canary(target, index)
        converted.append((target, doc, used))
    closed = close(index)
    outputs = []
    for target, doc, used in converted:
        involved = [target, *[s for s in used if s is not target]]
        notes = [n for s in involved for n in closed[id(s)][1]]
        tallies = _tallies(involved, closed)
        kind = "Argo Rollouts Rollout" if target.kind == "Rollout" else "Flagger Canary"
        body = dump_documents([doc])
        _check(body, f"{doc['metadata']['name']}.yaml")
        title = f"Converted by `stagewise convert` from the {kind} {target.name!r} in {target.filename}."
        outputs.append(Output(doc["metadata"]["name"], header(title, tallies, notes) + body, notes, tallies))
    return _conversion(outputs, index, closed)


def close(index: Index) -> dict[int, tuple[Tally, list[Note]]]:
    """Account for every document: those no conversion read are reported whole."""
    for source in index.sources:
        if not source.used:
            source.ledger.dropped((), _unused_reason(source))
    return {id(s): s.ledger.close() for s in index.sources}


def _unused_reason(source: Source) -> str:
    kind = source.kind
    if source.api_version == STAGEWISE_API:
        return "a stagewise spec already (to write Argo Rollouts from it, use --to argo)"
    if kind in ("AnalysisTemplate", "ClusterAnalysisTemplate", "MetricTemplate"):
        return f"this {kind} is not referenced by a converted Rollout or Canary"
    if kind in ("Service", "Ingress", "Deployment", "HorizontalPodAutoscaler", "ConfigMap", "Secret"):
        return f"Kubernetes-only: a {kind} that no converted object names; stagewise's router and platform " \
               "take its place"
    return f"a {kind or 'document'} ({source.api_version or 'no apiVersion'}) has no stagewise counterpart"


def _tallies(sources: list[Source], closed: dict[int, tuple[Tally, list[Note]]]) -> dict[str, Tally]:
    out: dict[str, Tally] = {}
    for source in sources:
        tally = closed[id(source)][0]
        before = out.get(source.filename, Tally(0, 0))
        out[source.filename] = Tally(before.mapped + tally.mapped, before.not_mapped + tally.not_mapped)
    return out


def _conversion(outputs: list[Output], index: Index, closed: dict[int, tuple[Tally, list[Note]]]) -> Conversion:
    notes = [n for s in index.sources for n in closed[id(s)][1]]
    return Conversion(outputs, notes, _tallies(index.sources, closed))


def _no_target(index: Index, message: str) -> list[Problem]:
    problems = []
    for filename in index.files:
        first = next(s for s in index.sources if s.filename == filename)
        kinds = sorted({f"{s.kind} ({s.api_version})" for s in index.sources if s.filename == filename})
        start = first.ledger.doc.start
        problems.append(Problem(filename, start.line, start.column, "", f"{message}; found {', '.join(kinds)}"))
    return problems


def _check(text: str, filename: str) -> None:
    """The output passes the spec loader; a converter that wrote an invalid spec has a defect, said as such."""
    try:
        load_spec_text(text, filename)
    except SpecError as exc:
        raise SpecError([Problem(p.file, p.line, p.column, p.field, f"the converted spec is invalid (a defect of "
                                                                      f"stagewise convert): {p.message}")
                         for p in exc.problems]) from exc


def to_argo(inputs: list[tuple[str, str]]) -> Conversion:
    """Every stagewise Service spec of `inputs` as a Rollout, its AnalysisTemplates and its two Services."""
    from stagewise.convert.argo_out import convert_to_argo

    return convert_to_argo(inputs)


__all__ = ["Conversion", "Note", "Output", "Tally", "close", "to_argo", "to_stagewise"]
