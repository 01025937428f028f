"""The API refuses input outside its bounds with a 4xx and a JSON error, and documents every answer.

Each parameter is bounded by what the store and the spec can honour: a
`limit` SQLite can bind, an `after` id it can hold, a name the spec would
accept. Out of bounds is a 422 naming the parameter, never a 500.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import spec_text, wait_phase

pytestmark = pytest.mark.timeout(60)

HUGE = "99999999999999999999"
"""Past SQLite's INTEGER (2**63 - 1): binding it raised OverflowError, a 500."""
ROW_ID_MAX = 2**63 - 1
PAUSED_CANARY = {"canary": {"steps": [{"setWeight": 30}, {"pause": {}}]}}


def refused(response: httpx.Response, where: str) -> dict[str, Any]:
    """Assert a 422 whose JSON body names `where` in its sentence and in its list of errors."""
    assert response.status_code == 422, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str) and where in body["detail"], body
    assert where in [e["where"] for e in body["errors"]], body
    return body


def delivered(client: httpx.Client) -> None:
    assert client.post("/api/v1/apply", json={"spec": spec_text("v1", {"full": {}})}).status_code == 200
    wait_phase(client, {"Succeeded"})


def operations(client: httpx.Client) -> list[tuple[str, str, dict[str, Any]]]:
    doc = client.get("/openapi.json").json()
    return [(method, path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_a_huge_limit_is_refused_with_422_not_a_server_error(client: httpx.Client) -> None:
    delivered(client)
    for path in ("/api/v1/services/shop/events", "/api/v1/services/shop/history"):
        body = refused(client.get(path, params={"limit": HUGE}), "query.limit")
        assert "1000" in body["detail"], body  # says what would be right


def test_an_after_id_past_what_the_store_holds_is_refused(client: httpx.Client) -> None:
    delivered(client)
    refused(client.get("/api/v1/services/shop/events", params={"after": HUGE}), "query.after")
    refused(client.get("/api/v1/services/shop/events", params={"after": ROW_ID_MAX + 1}), "query.after")
    last = client.get("/api/v1/services/shop/events", params={"after": ROW_ID_MAX, "limit": 1000})
    assert last.status_code == 200 and last.json() == []


@pytest.mark.parametrize(("params", "where"), [
    ({"limit": -1}, "query.limit"),
    ({"limit": 0}, "query.limit"),
    ({"after": -1}, "query.after"),
    ({"limit": "ten"}, "query.limit"),
])
def test_a_negative_or_zero_limit_or_after_is_refused(client: httpx.Client, params: dict[str, Any],
                                                     where: str) -> None:
    delivered(client)
    refused(client.get("/api/v1/services/shop/events", params=params), where)
    if "limit" in params:
        refused(client.get("/api/v1/services/shop/history", params=params), where)


@pytest.mark.parametrize("name", ["Shop", "a_b", "-shop", "shop-", "x" * 64, "sh%20op"])
def test_a_name_the_spec_would_refuse_is_a_422_that_states_the_rule(client: httpx.Client, name: str) -> None:
    for method, path in (("GET", "/api/v1/services/{}"), ("GET", "/api/v1/services/{}/events"),
                         ("POST", "/api/v1/services/{}/promote"), ("POST", "/api/v1/services/{}/undo")):
        body = refused(client.request(method, path.format(name)), "path.name")
        assert "DNS label" in body["detail"], body


def test_an_unknown_service_is_a_404_on_every_route_that_names_one_and_documented(client: httpx.Client) -> None:
    delivered(client)
    named = [(m, p, op) for m, p, op in operations(client) if "{name}" in p]
    assert len(named) >= 9
    for method, path, op in named:
        assert "404" in op["responses"], (method, path, sorted(op["responses"]))
        body = {"version": "v1"} if path.endswith("/releases") else None  # the one route whose body is required
        response = client.request(method.upper(), path.replace("{name}", "nope"), json=body)
        assert response.status_code == 404, (method, path, response.status_code, response.text)
        assert "nope" in response.json()["detail"]


def test_a_verb_that_does_not_fit_the_phase_is_a_409_and_documented(client: httpx.Client) -> None:
    delivered(client)
    for verb in ("promote", "abort", "pause", "resume", "retry", "undo"):
        response = client.post(f"/api/v1/services/shop/{verb}")
        assert response.status_code == 409, (verb, response.text)
        assert isinstance(response.json()["detail"], str)
    assert client.post("/api/v1/apply", json={"spec": spec_text("v2", PAUSED_CANARY)}).status_code == 200
    wait_phase(client, {"Paused"})
    busy = client.post("/api/v1/apply", json={"spec": spec_text("v3", PAUSED_CANARY)})
    assert busy.status_code == 409 and "promote or abort it first" in busy.json()["detail"]
    documented = {op["operationId"]: op["responses"] for _, _, op in operations(client)}
    for operation in ("apply", "promote", "abort", "pause", "resume", "retry", "undo"):
        assert "409" in documented[operation], (operation, sorted(documented[operation]))


def test_every_route_documents_its_bodies_and_every_refusal(client: httpx.Client) -> None:
    for method, path, op in operations(client):
        responses = op["responses"]
        ok = responses["200"]["content"]
        if op["operationId"] == "eventStream":
            assert set(ok) == {"text/event-stream"}
        elif op["operationId"] == "metrics":
            assert set(ok) == {"text/plain", "application/openmetrics-text"}
        else:
            assert ok["application/json"]["schema"], (method, path)
        if op.get("parameters") or "requestBody" in op:
            assert "422" in responses, (method, path)
        if method == "post":
            assert op["security"] == [{"token": []}] and "401" in responses, (method, path)
        for status, answer in responses.items():
            if status != "200":
                schema = answer["content"]["application/json"]["schema"]["$ref"]
                assert schema.rsplit("/", 1)[1] in {"ErrorBody", "BadSpecBody", "InvalidRequestBody"}, \
                    (method, path, status, schema)


def test_an_apply_body_with_an_unknown_or_missing_field_is_refused(client: httpx.Client) -> None:
    refused(client.post("/api/v1/apply", json={"spec": spec_text("v1", {"full": {}}), "filname": "a.yaml"}),
            "body.filname")
    refused(client.post("/api/v1/apply", json={"filename": "a.yaml"}), "body.spec")
    refused(client.post("/api/v1/apply", json={"spec": ""}), "body.spec")
    assert client.get("/api/v1/services").json() == []


def test_the_event_stream_refuses_a_service_that_is_no_name(client: httpx.Client) -> None:
    with client.stream("GET", "/api/v1/events/stream", params={"service": "No Such"}) as response:
        assert response.status_code == 422
        response.read()
    assert "DNS label" in response.json()["detail"]


def test_the_list_of_services_carries_no_events_and_one_service_its_newest(client: httpx.Client) -> None:
    delivered(client)
    assert [s["events"] for s in client.get("/api/v1/services").json()] == [[]]
    assert client.get("/api/v1/services/shop").json()["events"]
