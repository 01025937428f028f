"""The README's fragments are real: every spec it shows loads, and its recorded webhook verifies with its code."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from stagewise.core.pipeline import PipelineSpec
from stagewise.core.spec import ServiceSpec
from stagewise.notify import signing
from stagewise.spec import load_document_text, load_windows

README = Path(__file__).parents[2] / "README.md"
BASE: dict[str, Any] = {
    "apiVersion": "stagewise.dev/v1alpha1", "kind": "Service", "metadata": {"name": "checkout"},
    "spec": {"listen": "127.0.0.1:8080", "release": {"version": "v2", "run": {"command": ["app", "--port", "{port}"]}}},
}


def blocks(marker: str) -> dict[str, str]:
    """The fenced block after each `<!-- marker[: name] -->`, by name."""
    text = README.read_text()
    found = re.findall(rf"<!-- {marker}(?:: ([\w-]+))? -->\n```\w*\n(.*?)```", text, flags=re.S)
    return {name or marker: body for name, body in found}


SPECS = blocks("readme-spec")


def test_the_readme_has_every_section_with_a_fragment() -> None:
    assert set(SPECS) == {"hooks", "approvals", "windows", "windows-file", "notifications", "pipeline"}
    text = README.read_text()
    for title in ("### Hooks", "### Approvals", "### Freeze windows", "## Notifications",
                  "## People: tokens, roles and the audit log", "## Pipelines: staging → production"):
        assert f"\n{title}\n" in text, title


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_spec_fragment_loads(name: str, tmp_path: Path) -> None:
    text = SPECS[name]
    data = YAML(typ="safe").load(text)
    if name == "windows-file":
        path = tmp_path / "windows.yaml"
        path.write_text(text)
        assert [w.name for w in load_windows(path).windows] == ["incident-4711"]
        return
    if "kind" in data:
        spec = load_document_text(text, f"README.md ({name})")
        assert isinstance(spec, PipelineSpec) and [s.name for s in spec.spec.stages] == ["staging", "production"]
        return
    doc = copy.deepcopy(BASE)
    doc["spec"].update(data["spec"])
    spec = load_document_text(json.dumps(doc), f"README.md ({name})")
    assert isinstance(spec, ServiceSpec)
    body = spec.spec
    assert body.hooks or body.notifications or body.windows or name == "approvals"


def test_the_recorded_webhook_verifies_with_the_readmes_code() -> None:
    recorded = blocks("readme-recorded-webhook")["readme-recorded-webhook"]
    head, body = recorded.split("\n\n", 1)
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    raw = body.strip().encode()
    header = headers["X-Stagewise-Signature"]
    t = int(header.split(",")[0].removeprefix("t="))
    namespace: dict[str, Any] = {}
    exec(compile(blocks("readme-verify")["readme-verify"], "README.md", "exec"), namespace)
    verify = namespace["verify"]
    assert verify("s3cret", header, raw, now=t)
    assert not verify("s3cret", header, raw, now=t + 301), "a replay after five minutes is refused"
    assert not verify("other", header, raw, now=t)
    assert not verify("s3cret", header, raw.replace(b'"v2"', b'"v9"'), now=t)
    assert signing.verify("s3cret", header, raw, now=t), "the README's code and the server agree"
    assert headers["X-Stagewise-Id"] in raw.decode()
