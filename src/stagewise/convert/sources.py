"""The input of a conversion: every YAML document of every file, read with positions and sorted by kind.

A Rollout names its AnalysisTemplates and Services; a Canary names its
Deployment and MetricTemplates; they may sit in other files of the same
command line. So all files are read first, into one index, and each document
gets a `Ledger` that accounts for its fields whichever conversion uses it.

Reads text it is given (the CLI reads the files), never a file itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stagewise.convert.ledger import Ledger
from stagewise.errors import Problem, SpecError
from stagewise.spec.yamltree import compose_documents

ARGO_GROUP = "argoproj.io/"
FLAGGER_GROUP = "flagger.app/"
STAGEWISE_API = "stagewise.dev/v1alpha1"


@dataclass
class Source:
    """One Kubernetes-shaped document and the account of its fields."""

    filename: str
    ledger: Ledger
    used: bool = False
    """Some conversion read it (an unreferenced AnalysisTemplate is reported as such)."""

    @property
    def data(self) -> dict[str, object]:
        data = self.ledger.data
        assert isinstance(data, dict)
        return data

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.data.get("apiVersion", ""))

    @property
    def name(self) -> str:
        metadata = self.data.get("metadata")
        return str(metadata.get("name", "")) if isinstance(metadata, dict) else ""

    def is_a(self, group: str, *kinds: str) -> bool:
        return self.api_version.startswith(group) and self.kind in kinds


@dataclass
class Index:
    """Every document of the input, with look-ups by kind and name."""

    sources: list[Source] = field(default_factory=list)

    def of(self, group: str, *kinds: str) -> list[Source]:
        return [s for s in self.sources if s.is_a(group, *kinds)]

    def named(self, group: str, kind: str, name: str) -> Source | None:
        return next((s for s in self.of(group, kind) if s.name == name), None)

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(s.filename for s in self.sources))


def read_sources(inputs: list[tuple[str, str]]) -> Index:
    """Documents of `inputs` (filename, text); a SpecError lists every document that is no object."""
    index = Index()
    problems: list[Problem] = []
    for filename, text in inputs:
        try:
            documents = compose_documents(text, filename)
        except SpecError as exc:
            problems += exc.problems
            continue
        if not documents:
            problems.append(Problem(filename, 1, 1, "", "the file is empty; expected an Argo Rollouts Rollout, "
                                                        "a Flagger Canary or a stagewise Service"))
        for doc in documents:
            if not isinstance(doc.data, dict) or not isinstance(doc.data.get("kind"), str):
                problems.append(Problem(filename, doc.start.line, doc.start.column, "",
                                        "expected a Kubernetes object: a mapping with apiVersion and kind"))
                continue
            index.sources.append(Source(filename, Ledger(filename, doc)))
    if problems:
        raise SpecError(problems)
    return index


__all__ = ["ARGO_GROUP", "FLAGGER_GROUP", "STAGEWISE_API", "Index", "Source", "read_sources"]
