"""Services, deliveries and events as the controller stores them, for the store tests of both backends."""

from __future__ import annotations

from stagewise.core.delivery import Delivery, Event
from stagewise.core.service import ServiceRecord
from stagewise.core.spec import ServiceSpec


def make_spec(name: str = "web", version: str = "v2") -> ServiceSpec:
    return ServiceSpec.model_validate({
        "apiVersion": "stagewise.dev/v1alpha1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "listen": "127.0.0.1:8080",
            "replicas": 2,
            "release": {
                "version": version,
                "run": {"command": ["python3", "-m", "http.server", "{port}"]},
                "readiness": {"http": "/healthz"},
            },
            "strategy": {"canary": {"steps": [
                {"setWeight": 10},
                {"pause": {"duration": "30s"}},
                {"setWeight": 50},
                {"analysis": {"templates": ["errors"], "duration": "1m30s"}},
            ]}},
            "analysis": {"errors": {"judge": "threshold", "margin": 0.5}},
        },
    })


def make_delivery(name: str = "web", version: str = "v2", at: float = 100.0) -> Delivery:
    spec = make_spec(name, version)
    stable = make_spec(name, "v1").spec.release
    return Delivery(service=name, spec=spec, stable=stable, created_at=at, updated_at=at)


def make_service(name: str = "web", at: float = 100.0) -> ServiceRecord:
    spec = make_spec(name)
    return ServiceRecord(name=name, spec=spec, stable=make_spec(name, "v1").spec.release,
                         created_at=at, updated_at=at)


def ev(message: str, at: float = 100.0, kind: str = "step") -> Event:
    return Event(at=at, kind=kind, message=message)
