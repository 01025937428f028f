"""The HTTP API: tokens on every mutating route, clear errors, verbs that reach the controller."""

from __future__ import annotations

from pathlib import Path

import httpx
from openapi_spec_validator import validate

from tests.api.conftest import spec_text, wait_phase


def mutating_routes(client: httpx.Client) -> list[tuple[str, str]]:
    doc = client.get("/openapi.json").json()
    return [(method, path) for path, ops in doc["paths"].items() for method in ops if method in ("post", "delete")]


def test_every_mutating_route_refuses_a_missing_or_wrong_token(client: httpx.Client, tmp_path: Path) -> None:
    assert client.post("/api/v1/apply", json={"spec": spec_text("v1", {"full": {}})}).status_code == 200
    wait_phase(client, {"Succeeded"})
    before = client.get("/api/v1/services/shop").json()
    routes = mutating_routes(client)
    assert len(routes) >= 8 and ("delete", "/api/v1/services/{name}") in routes
    for method, path in routes:
        url = path.replace("{name}", "shop")
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            body = {"spec": spec_text("v2", {"full": {}})} if method == "post" else None
            r = client.request(method, url, headers=headers, json=body)
            assert r.status_code == 401, (method, url, headers, r.text)
            assert "token" in r.json()["detail"]
    after = client.get("/api/v1/services/shop").json()
    assert after["delivery"]["id"] == before["delivery"]["id"]
    assert after["stable"] == before["stable"]


def test_the_openapi_document_is_valid_and_posts_and_deletes_are_its_only_writes(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    validate(doc)  # raises with the offending part of the document
    methods = {method for ops in doc["paths"].values() for method in ops}
    # The token test above calls every POST and DELETE route: a PUT or PATCH would escape it.
    assert methods == {"get", "post", "delete"}, methods
    delete = doc["paths"]["/api/v1/services/{name}"]["delete"]
    assert set(delete["responses"]) >= {"200", "401", "404", "409"}
    assert {p["name"] for p in delete["parameters"]} >= {"name", "keep_running", "force"}


def test_the_openapi_document_names_every_verb(client: httpx.Client) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    for verb in ("promote", "abort", "pause", "resume", "retry", "undo"):
        assert f"/api/v1/services/{{name}}/{verb}" in paths
    assert "/api/v1/apply" in paths


def test_a_bad_spec_is_refused_with_its_position(client: httpx.Client) -> None:
    r = client.post("/api/v1/apply", json={"spec": "apiVersion: x\nkind: Service\n", "filename": "bad.yaml"})
    assert r.status_code == 400
    problems = r.json()["problems"]
    assert problems and all(p["file"] == "bad.yaml" and p["line"] >= 1 for p in problems)


def test_verbs_drive_a_delivery(client: httpx.Client) -> None:
    client.post("/api/v1/apply", json={"spec": spec_text("v1", {"full": {}})})
    wait_phase(client, {"Succeeded"})
    strategy = {"canary": {"steps": [{"setWeight": 30}, {"pause": {}}]}}
    r = client.post("/api/v1/apply", json={"spec": spec_text("v2", strategy)})
    assert r.json()["result"] == "delivery started"
    wait_phase(client, {"Paused"})
    status = client.get("/api/v1/services/shop").json()
    assert status["delivery"]["weights"] == {"v1": 70, "v2": 30}
    assert status["delivery"]["step"] == 2
    conflict = client.post("/api/v1/apply", json={"spec": spec_text("v3", strategy)})
    assert conflict.status_code == 409
    client.post("/api/v1/services/shop/abort")
    wait_phase(client, {"RolledBack"})
    client.post("/api/v1/services/shop/retry")
    wait_phase(client, {"Paused"})
    client.post("/api/v1/services/shop/promote")
    wait_phase(client, {"Succeeded"})
    history = client.get("/api/v1/services/shop/history").json()
    assert [d["phase"] for d in history] == ["Succeeded", "Succeeded"]
    assert client.post("/api/v1/services/shop/promote").status_code == 409
    assert client.get("/api/v1/services/nope").status_code == 404
    events = client.get("/api/v1/services/shop/events").json()
    assert any("retry" in e["message"] for e in events)


def test_delete_forgets_a_service_and_keeps_its_history(client: httpx.Client) -> None:
    client.post("/api/v1/apply", json={"spec": spec_text("v1", {"full": {}})})
    wait_phase(client, {"Succeeded"})
    client.post("/api/v1/apply", json={"spec": spec_text("v2", {"canary": {"steps": [{"setWeight": 30},
                                                                                      {"pause": {}}]}})})
    wait_phase(client, {"Paused"})
    refused = client.delete("/api/v1/services/shop")
    assert refused.status_code == 409 and "abort it" in refused.json()["detail"]

    r = client.delete("/api/v1/services/shop", params={"force": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["service"] == "shop" and body["kept_running"] is False and body["ended_delivery"] == 2
    assert {i["release"] for i in body["instances"]} == {"v1", "v2"}
    assert body["router"]["addresses"] == ["127.0.0.1:18080"]

    assert client.get("/api/v1/services/shop").status_code == 404
    assert [s["service"] for s in client.get("/api/v1/services").json()] == []
    history = client.get("/api/v1/services/shop/history").json()
    assert [d["phase"] for d in history] == ["Failed", "Succeeded"]
    assert client.delete("/api/v1/services/shop").status_code == 404
    assert client.get("/api/v1/services/nope/history").status_code == 404
    assert client.post("/api/v1/apply", json={"spec": spec_text("v1", {"full": {}})}).json()["delivery"] == 3
