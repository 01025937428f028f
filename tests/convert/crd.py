"""The Rollout CRD's own OpenAPI schema (argo-rollouts manifests/crds/rollout-crd.yaml, vendored in tests/data)
as a jsonschema validator — as written, and strict: every object that names its properties and does not say
it keeps unknown ones refuses others, as the API server would prune them (a field we write that the CRD does
not know would be lost without a word)."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from jsonschema import Draft7Validator
from ruamel.yaml import YAML

from tests.convert.cases import DATA

CRD = DATA / "argo-rollouts" / "manifests" / "crds" / "rollout-crd.yaml"


@cache
def rollout_schema() -> dict[str, Any]:
    crd = YAML(typ="safe").load(CRD.read_text(encoding="utf-8"))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _closed(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@cache
def validators() -> tuple[Draft7Validator, Draft7Validator]:
    schema = rollout_schema()
    return Draft7Validator(schema), Draft7Validator(_closed(copy.deepcopy(schema)))


def rollout_errors(document: dict[str, Any]) -> list[str]:
    """Every way `document` breaks the CRD's schema, as written or strict; empty when it fits."""
    plain, strict = validators()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in plain.iter_errors(document)]
    errors += [f"(strict) {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in strict.iter_errors(document)]
    return errors
