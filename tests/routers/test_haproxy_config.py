"""The managed HAProxy's configuration as rendered, without starting HAProxy: the metrics frontend."""

from __future__ import annotations

from pathlib import Path

from stagewise.core.routes import Endpoint, RouteTable
from stagewise.routers.haproxy.config import Layout, Paths, assign_slots, desired_for, layout_for, render

METRICS = "127.0.0.1:9101"


def route_table(metrics_listen: str | None = None) -> RouteTable:
    endpoints = (Endpoint(id="shop-v1-0", release="v1", address="127.0.0.1:8001"),
                 Endpoint(id="shop-v2-0", release="v2", address="127.0.0.1:8002"))
    return RouteTable(service="shop", listen="127.0.0.1:8080", stable="v1", endpoints=endpoints,
                      weights={"v1": 90, "v2": 10}, metrics_listen=metrics_listen)


def layout_and_config(table: RouteTable, previous: Layout | None = None) -> tuple[Layout, str]:
    slots = assign_slots(table, {})
    layout = layout_for(table, previous, slots)
    return layout, render(layout, desired_for(table, layout, slots), Paths(Path("/tmp/sw-haproxy/shop")))


def frontend(config: str, name: str) -> list[str]:
    """The lines of one frontend section (empty when there is none)."""
    lines = config.splitlines()
    if f"frontend {name}" not in lines:
        return []
    start = lines.index(f"frontend {name}") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return [line.strip() for line in lines[start:end]]


def test_the_metrics_frontend_is_rendered_only_with_metrics_listen() -> None:
    _, without = layout_and_config(route_table())
    assert frontend(without, "metrics") == []
    assert "prometheus-exporter" not in without

    _, config = layout_and_config(route_table(METRICS))
    assert frontend(config, "metrics") == [
        f"bind {METRICS}",
        "no log",
        "http-request use-service prometheus-exporter if { path /metrics }",
        "http-request return status 404",
    ]
    assert frontend(config, "main")[0] == "bind 127.0.0.1:8080", "the traffic frontend stays as it was"


def test_metrics_listen_is_part_of_the_layout() -> None:
    plain, _ = layout_and_config(route_table())
    scraped, _ = layout_and_config(route_table(METRICS), plain)
    assert scraped != plain, "setting metricsListen needs a reload"
    assert scraped.metrics_listen == METRICS
    again, _ = layout_and_config(route_table(METRICS), scraped)
    assert again == scraped, "the same metricsListen must not reload"
    moved, _ = layout_and_config(route_table("127.0.0.1:9102"), scraped)
    assert moved != scraped
    removed, _ = layout_and_config(route_table(), scraped)
    assert removed != scraped and removed.metrics_listen is None
    assert Layout.from_json(scraped.to_json()) == scraped, "kept in layout.json as it was"
    assert Layout.from_json('{"listen": "127.0.0.1:8080"}').metrics_listen is None, "a layout.json from before"
