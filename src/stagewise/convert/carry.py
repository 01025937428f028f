"""The `stagewise.dev/*` annotations that carry what Kubernetes objects have no field for.

A Rollout has no field for the address users call on a host, the router in
front of it, the platform that runs it, or a preview reached by a header; an
AnalysisTemplate none for a sequential judge. `--to argo` writes those into
annotations, as kubectl keeps its last-applied configuration, and
`--to stagewise` reads them back first — so a spec survives the trip to Argo
and back, and a team that moves keeps a record of what it ran.

Pure.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "stagewise.dev/"
LISTEN = PREFIX + "listen"
ROUTER = PREFIX + "router"
PLATFORM = PREFIX + "platform"
PREVIEW = PREFIX + "preview"
GATES = {"hooks": PREFIX + "hooks", "notifications": PREFIX + "notifications", "windows": PREFIX + "windows"}
"""On a Rollout: the spec's hooks, notifications and freeze windows, which Argo Rollouts has no field for."""
TEMPLATE = PREFIX + "analysis-template"
"""On an AnalysisTemplate: the stagewise template it was written from, as JSON."""
NAME = PREFIX + "name"
"""On an AnalysisTemplate: the stagewise template's name, when it is no Kubernetes name (`404s percentage`)."""
SERVICE = PREFIX + "service"
"""On an AnalysisTemplate: the service whose spec defines it (so one no step names still travels back)."""
MANAGED_BY = {"app.kubernetes.io/managed-by": "stagewise"}


def dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def load(text: Any) -> Any:
    """The JSON value of an annotation, or None when it is not JSON."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


__all__ = ["GATES", "LISTEN", "MANAGED_BY", "NAME", "PLATFORM", "PREFIX", "PREVIEW", "ROUTER", "SERVICE", "TEMPLATE",
           "dump", "load"]
