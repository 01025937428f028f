"""Each error the controller raises on purpose becomes one documented status with a JSON body."""

from __future__ import annotations

import json

import httpx
import pytest

from stagewise.api.refusals import stagewise_error
from stagewise.errors import (
    ConflictError,
    NotFoundError,
    Problem,
    SpecError,
    StagewiseError,
    StoreBusyError,
    StoreError,
    UnknownDriverError,
)


@pytest.mark.parametrize(("error", "status"), [
    (NotFoundError("no service named 'x'"), 404),
    (ConflictError("x: delivery 1 is Paused; promote or abort it first"), 409),
    (SpecError([Problem("a.yaml", 3, 5, "spec.replicas", "expected a number")]), 400),
    (UnknownDriverError("router", "f5", ["builtin", "haproxy", "nginx"]), 400),
    (StoreBusyError("state.db: database is locked", delay=2.0), 503),
    (StoreError("state.db: file is not a database"), 503),
])
async def test_each_error_has_its_status_and_a_sentence(error: StagewiseError, status: int) -> None:
    response = await stagewise_error(None, error)  # type: ignore[arg-type]  # the request is not read
    body = json.loads(bytes(response.body))
    assert response.status_code == status
    assert body["detail"] == str(error)
    if status == 400:
        assert isinstance(body["problems"], list)
    assert ("retry-after" in response.headers) == isinstance(error, StoreBusyError)


async def test_a_spec_error_lists_each_problem_with_its_position() -> None:
    problem = Problem("a.yaml", 3, 5, "spec.replicas", "expected a number")
    body = json.loads(bytes((await stagewise_error(None, SpecError([problem]))).body))  # type: ignore[arg-type]
    assert body["problems"] == [{"file": "a.yaml", "line": 3, "column": 5, "field": "spec.replicas",
                                 "message": "expected a number"}]


async def test_a_busy_store_says_when_to_retry() -> None:
    response = await stagewise_error(None, StoreBusyError("busy", delay=2.0))  # type: ignore[arg-type]
    assert response.headers["retry-after"] == "2"


def test_a_method_a_path_does_not_take_is_refused_with_every_method_it_does_take(client: httpx.Client) -> None:
    # GET and DELETE of a service are two routes on one path: the 405 names both
    answer = client.request("OPTIONS", "/api/v1/services/shop")
    assert answer.status_code == 405
    assert {m.strip() for m in answer.headers["Allow"].split(",")} >= {"GET", "DELETE"}
    assert answer.json() == {"detail": "Method Not Allowed"}
