"""The dashboard's pages as HTML: the overview of hundreds of services, and a delivery's page."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from stagewise.controller import Controller
from tests.dashboard.conftest import CANARY_PAUSE, Server, make_spec, populate, wait_for

SERVICES = 300
RENDER_BOUND = 3.0
"""Seconds for the overview of 300 services; it takes about a tenth of that (printed with -s)."""


class Page(HTMLParser):
    """The few things the tests read from a page: rows, the current step, elements by id, scripts."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.buttons: dict[str, dict[str, str]] = {}
        self.ids: dict[str, dict[str, str]] = {}
        self.scripts: list[dict[str, str]] = []
        self.inline_styles: list[str] = []
        self.handlers: list[str] = []
        self.current_steps = 0
        self.current_text = ""
        self._in_current = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-service" in a:
            self.rows.append(a)
        if "id" in a:
            self.ids[a["id"]] = a
        if tag == "button" and "data-action" in a:
            self.buttons[a["data-action"]] = a
        if tag == "script":
            self.scripts.append(a)
        if "style" in a:
            self.inline_styles.append(tag)
        self.handlers += [k for k in a if k.startswith("on")]
        if tag == "li" and a.get("aria-current") == "step":
            self.current_steps += 1
            self._in_current = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "li":
            self._in_current = False

    def handle_data(self, data: str) -> None:
        if self._in_current:
            self.current_text += data


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """300 services in every kind of state, served by a server whose controller does not tick."""
    state = tmp_path_factory.mktemp("fleet")
    started = time.perf_counter()
    groups = populate(state, SERVICES)
    print(f"\npopulated {SERVICES} services in {time.perf_counter() - started:.1f}s")
    server = Server(state, Controller(state), run_loop=False).start()
    try:
        yield server, groups
    finally:
        server.stop()


def test_the_overview_of_300_services_renders_fast(fleet: Any) -> None:
    server, groups = fleet
    with server.client() as c:
        c.get("/")  # warm up: templates compile on first use
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            r = c.get("/")
            timings.append(time.perf_counter() - started)
    assert r.status_code == 200
    page = Page(r.text)
    print(f"overview of {SERVICES} services: {min(timings) * 1000:.0f} ms (best of 3), {len(r.content):,} bytes")
    assert len(page.rows) == SERVICES
    assert min(timings) < RENDER_BOUND
    # Deliveries in flight come first: they are what someone watching a release looks for.
    assert [row["data-service"] for row in page.rows[: len(groups["paused"])]] == groups["paused"]


@pytest.mark.parametrize(("phase", "group"), [("Paused", "paused"), ("RolledBack", "rolled"), ("active", "paused")])
def test_the_overview_filters_by_phase(fleet: Any, phase: str, group: str) -> None:
    server, groups = fleet
    with server.client() as c:
        page = Page(c.get("/", params={"phase": phase}).text)
        partial = Page(c.get("/partials/overview", params={"phase": phase}).text)
    assert sorted(row["data-service"] for row in page.rows) == sorted(groups[group])
    assert [row["data-service"] for row in partial.rows] == [row["data-service"] for row in page.rows]
    if phase != "active":
        assert {row["data-phase"] for row in page.rows} == {phase}


def test_the_overview_filters_by_name_and_counts_every_phase(fleet: Any) -> None:
    server, groups = fleet
    with server.client() as c:
        r = c.get("/partials/overview", params={"q": "SVC-2", "phase": "Succeeded"})
    names = [row["data-service"] for row in Page(r.text).rows]
    assert names == [f"svc-{i}" for i in range(200, 300)]
    assert f"all <b>{SERVICES}</b>" in r.text
    assert f"Paused <b>{len(groups['paused'])}</b>" in r.text
    assert f"RolledBack <b>{len(groups['rolled'])}</b>" in r.text


def test_a_paused_canary_row_shows_step_and_share(fleet: Any) -> None:
    server, groups = fleet
    with server.client() as c:
        html = c.get("/partials/overview", params={"q": groups["paused"][0]}).text
    assert "2/7" in html and "pause until promoted" in html and "20%" in html


def apply(c: httpx.Client, name: str, version: str, strategy: dict[str, Any]) -> None:
    spec = make_spec(name, version, strategy).model_dump(mode="json", by_alias=True)
    r = c.post("/api/v1/apply", json={"spec": json.dumps(spec)})
    assert r.status_code == 200, r.text


def phase(c: httpx.Client, name: str) -> str:
    return str(c.get(f"/api/v1/services/{name}").json()["phase"])


def test_the_delivery_page_shows_plan_weights_verdicts_and_actions(live: Server) -> None:
    with live.client(authorised=True) as c:
        apply(c, "shop", "v1", {"full": {}})
        wait_for(lambda: phase(c, "shop") == "Succeeded", what="v1")
        apply(c, "shop", "v2", CANARY_PAUSE)
        wait_for(lambda: phase(c, "shop") == "Paused", what="the canary's pause")
        time.sleep(1.5)  # a second of background analysis: chart points
        r = c.get("/services/shop")
    assert r.status_code == 200
    page = Page(r.text)
    assert page.current_steps == 1
    assert " ".join(page.current_text.split()) == "▶ pause pause until promoted now"
    assert page.ids["summary"]["data-phase"] == "Paused"
    assert 'data-release="v2" data-weight="20"' in r.text
    assert "background analysis" in r.text and "candidate error rate" in r.text
    data = json.loads(page.ids["page-data"]["data-json"])
    assert data["charts"]["traffic"]["series"]["v2"][0] == 20
    assert len(data["charts"]["runs"]["background"]["t"]) >= 1
    allowed = {a["name"]: a["allowed"] for a in data["actions"]}
    assert allowed == {"approve": False, "reject": False, "promote": True, "promote-full": True, "pause": True,
                       "resume": False, "abort": True, "retry": False, "undo": False, "delete": False}
    paths = {a["name"]: a["path"] for a in data["actions"]}
    assert paths["promote-full"] == "/api/v1/services/shop/promote?full=true"
    assert {name: "disabled" not in b for name, b in page.buttons.items()} == allowed


def test_a_rolled_back_page_keeps_the_failed_analysis_and_its_evidence(live: Server, tmp_path: Path) -> None:
    controller = live.app.state.controller
    controller.router(make_spec("shop", "v1", {"full": {}})).error_rate["v3"] = 0.5
    strategy = {"canary": {"steps": [{"setWeight": 50}, {"analysis": {"templates": ["errors"], "duration": "1m"}}]}}
    with live.client(authorised=True) as c:
        apply(c, "shop", "v1", {"full": {}})
        wait_for(lambda: phase(c, "shop") == "Succeeded", what="v1")
        apply(c, "shop", "v3", strategy)
        wait_for(lambda: phase(c, "shop") == "RolledBack", timeout=30, what="the rollback")
        r = c.get("/services/shop")
    page = Page(r.text)
    assert page.ids["summary"]["data-phase"] == "RolledBack"
    assert "Why rolled back:" in r.text and "analysis Failed" in r.text
    assert page.ids["run-past-0"]["data-outcome"] == "Failed"
    data = json.loads(page.ids["page-data"]["data-json"])
    run = data["charts"]["runs"]["past-0"]
    assert run["e_value"]["error-rate"][-1] >= run["bounds"]["error-rate"]
    assert data["charts"]["traffic"]["series"]["v1"][-1] == 100


def test_a_deleted_service_is_a_404_page_that_points_to_its_history(live: Server) -> None:
    with live.client(authorised=True) as c:
        apply(c, "shop", "v1", {"full": {}})
        wait_for(lambda: phase(c, "shop") == "Succeeded", what="v1")
        page = Page(c.get("/services/shop").text)
        assert "disabled" not in page.buttons["delete"] and page.buttons["delete"]["data-then"] == "/"
        assert c.delete("/api/v1/services/shop").status_code == 200
        r = c.get("/services/shop")
        assert r.status_code == 404
        assert "shop was deleted at" in r.text and "/api/v1/services/shop/history" in r.text
        assert 'data-service="shop"' not in c.get("/").text
        # a page left open refreshes its live part: it says so, and every button goes off
        partial = c.get("/partials/services/shop")
        assert partial.status_code == 200 and "shop was deleted at" in partial.text
        data = json.loads(Page(partial.text).ids["page-data"]["data-json"])
        assert {a["name"] for a in data["actions"]} == set(page.buttons)
        assert not any(a["allowed"] for a in data["actions"])


def test_an_unknown_service_or_delivery_is_a_404_page(live: Server) -> None:
    with live.client(authorised=True) as c:
        assert c.get("/services/nope").status_code == 404
        assert "no service named" in c.get("/services/nope").text
        apply(c, "shop", "v1", {"full": {}})
        assert c.get("/services/shop", params={"delivery": 999}).status_code == 404
        assert c.get("/partials/services/nope").status_code == 404


def test_a_delivery_id_past_what_the_store_holds_is_refused_not_a_server_error(live: Server) -> None:
    with live.client(authorised=True) as c:
        apply(c, "shop", "v1", {"full": {}})
        for page in ("/services/shop", "/partials/services/shop"):
            for delivery in ("99999999999999999999", str(2**63), "0", "-1"):
                r = c.get(page, params={"delivery": delivery})
                assert r.status_code == 422, (page, delivery, r.status_code, r.text[:300])
                assert "query.delivery" in r.json()["detail"]


def test_pages_carry_no_inline_script_style_or_handler(live: Server) -> None:
    with live.client(authorised=True) as c:
        apply(c, "shop", "v1", {"full": {}})
        wait_for(lambda: phase(c, "shop") == "Succeeded", what="v1")
        for path in ("/", "/services/shop", "/partials/overview", "/partials/services/shop", "/services/nope"):
            page = Page(c.get(path).text)
            assert all(s.get("src", "").startswith("/static/") for s in page.scripts), (path, page.scripts)
            assert page.inline_styles == [] and page.handlers == [], path


def test_every_button_calls_a_documented_api_route(live: Server) -> None:
    with live.client(authorised=True) as c:
        apply(c, "shop", "v1", {"full": {}})
        doc = c.get("/openapi.json").json()
        html = c.get("/services/shop").text
    buttons = re.findall(r'data-action="([\w-]+)" data-role="\w+" hx-(post|delete)="([^"]+)"', html)
    assert {name for name, _, _ in buttons} == {"approve", "reject", "promote", "promote-full", "pause", "resume",
                                                 "abort", "retry", "undo", "delete"}
    for _, method, url in buttons:
        path = re.sub(r"/shop(/|$)", r"/{name}\1", url.split("?")[0])
        assert method in doc["paths"][path], url
    assert "full" in {p["name"] for p in doc["paths"]["/api/v1/services/{name}/promote"]["post"]["parameters"]}
    assert not [p for p in doc["paths"] if p == "/" or p.startswith(("/services", "/partials", "/static"))], \
        "the pages are not part of the API"
