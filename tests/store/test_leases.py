"""Leases and the fence, on each backend: who holds a service, and that a write under a lost lease commits nothing.

Expiry is real time on the store's clock: leases here last a fraction of a
second, and a test waits for one to run out by polling the store itself.
"""

from __future__ import annotations

import threading
import time

import pytest

from stagewise.errors import LeaseLostError
from stagewise.store import Fence, Store
from tests.store.conftest import Backend
from tests.store.samples import ev, make_delivery, make_service

pytestmark = pytest.mark.timeout(60)
SHORT = 0.3


def expired(store: Store, service: str) -> None:
    """Wait (bounded) until the lease of `service` is behind the store's clock."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now, leases = store.leases()
        if all(lease.expires_at <= now for lease in leases if lease.service == service):
            return
        time.sleep(0.05)
    raise AssertionError(f"the lease of {service} never expired")


def test_a_lease_is_taken_once_renewed_by_its_holder_and_taken_over_at_a_new_epoch_once_expired(store: Store) -> None:
    assert store.acquire_leases("a", ["web", "api"], duration=SHORT) == {"web": 1, "api": 1}
    assert store.acquire_leases("b", ["web", "api"], duration=SHORT) == {}, "held: not free"
    assert store.renew_leases("a", duration=SHORT) == {"web": 1, "api": 1}
    expired(store, "web")
    assert store.renew_leases("a", duration=SHORT) == {}, "an expired lease is not renewed"
    assert store.acquire_leases("b", ["web"], duration=30) == {"web": 2}
    lease = store.lease("web")
    assert lease is not None and (lease.holder, lease.epoch) == ("b", 2)
    store.release_leases("b", ["web"])
    assert store.acquire_leases("c", ["web"], duration=30) == {"web": 3}, "given up: free at once"


def test_giving_up_some_leases_frees_only_those_the_holder_holds(store: Store) -> None:
    assert store.acquire_leases("a", ["web", "api", "db"], duration=30) == {"web": 1, "api": 1, "db": 1}
    assert store.acquire_leases("b", ["cache"], duration=30) == {"cache": 1}
    store.release_leases("a", ["web", "db", "cache"])
    store.release_leases("a", [])
    holders = {lease.service: lease.holder for lease in store.leases()[1]}
    assert holders == {"web": "", "api": "a", "db": "", "cache": "b"}
    assert store.acquire_leases("c", ["web", "api", "db", "cache"], duration=30) == {"web": 2, "db": 2}


def test_heartbeats_list_the_live_controllers(store: Store) -> None:
    assert store.heartbeat("a", duration=SHORT) == ["a"]
    assert store.heartbeat("b", duration=30) == ["a", "b"]
    expired(store, "-")
    time.sleep(SHORT)
    assert store.heartbeat("c", duration=30) == ["b", "c"], "a's heartbeat ran out"
    store.release_leases("b")
    assert store.heartbeat("c", duration=30) == ["c"]


def test_a_write_under_a_lost_lease_is_refused_and_commits_nothing(store: Store) -> None:
    store.put_service(make_service("web"))
    delivery = store.create_delivery(make_delivery("web"), [ev("applied")])
    epochs = {"web": store.acquire_leases("a", ["web"], duration=SHORT)["web"]}
    store.fence_with(lambda service: Fence(holder="a", epoch=epochs.get(service)))
    store.save_delivery(delivery.model_copy(update={"step": 1}), [ev("step 1")])
    expired(store, "web")
    with pytest.raises(LeaseLostError, match="expired") as refused:
        store.save_delivery(delivery.model_copy(update={"step": 2}), [ev("step 2")])
    assert refused.value.holder == "a"
    store.fence_with(None)
    assert store.acquire_leases("b", ["web"], duration=30) == {"web": 2}
    store.fence_with(lambda service: Fence(holder="a", epoch=epochs.get(service)))
    with pytest.raises(LeaseLostError, match="b holds it at epoch 2") as taken:
        store.save_delivery(delivery.model_copy(update={"step": 2}), [ev("step 2")])
    assert (taken.value.service, taken.value.holder, taken.value.epoch) == ("web", "b", 2)
    with pytest.raises(LeaseLostError):
        store.put_service(make_service("web", at=500.0))
    latest = store.latest_delivery("web")
    assert latest is not None and latest.step == 1
    assert [e.message for e in store.events("web")] == ["applied", "step 1"]
    service = store.get_service("web")
    assert service is not None and service.updated_at == 100.0


def test_a_write_by_a_server_that_does_not_hold_the_service_moves_the_epoch_on(store: Store) -> None:
    """A person's verb on another server fences the holder's decision in flight: made before the verb, it must not
    overwrite it; the holder's renewal then gives it the new epoch, and it reads the state again."""
    store.put_service(make_service("web"))
    delivery = store.create_delivery(make_delivery("web"), [ev("applied")])
    assert store.acquire_leases("a", ["web"], duration=30) == {"web": 1}
    store.fence_with(lambda service: Fence(holder="b", epoch=None))
    store.save_delivery(delivery.model_copy(update={"paused": True}), [ev("paused by a person", kind="user")])
    store.fence_with(lambda service: Fence(holder="a", epoch=1))
    with pytest.raises(LeaseLostError, match="epoch moved on to 2"):
        store.save_delivery(delivery.model_copy(update={"step": 1}), [ev("step 1")])
    assert store.renew_leases("a", duration=30) == {"web": 2}
    store.fence_with(lambda service: Fence(holder="a", epoch=2))
    latest = store.latest_delivery("web")
    assert latest is not None and latest.paused
    store.save_delivery(latest.model_copy(update={"step": 1}), [ev("step 1")])


def test_postgresql_tells_every_server_of_a_write(store: Store, backend: Backend) -> None:
    """LISTEN/NOTIFY: a write through one store object wakes another's wait, with the service's name."""
    if backend.name == "sqlite":
        assert store.wait_for_changes(0.01) is None
        return
    other = backend.open()
    try:
        assert other.wait_for_changes(0.01) == set()  # listening from now on
        woke: list[set[str] | None] = []
        waiter = threading.Thread(target=lambda: woke.append(other.wait_for_changes(10)))
        waiter.start()
        time.sleep(0.2)
        store.put_service(make_service("web"))
        waiter.join(15)
        assert woke == [{"web"}]
    finally:
        other.close()
