"""Security headers on every kind of response, and the vendored front-end files with their licences."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from stagewise.api import dashboard
from tests.dashboard.conftest import Server

STATIC = Path(dashboard.__file__).parent / "static"
REPO = Path(__file__).parents[2]


def assert_secured(headers: Mapping[str, str], *, docs: bool = False) -> None:
    h = {k.lower(): v for k, v in headers.items()}
    csp = h["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "no-referrer"
    if not docs:
        assert directives["script-src"] == "'self'"
        assert directives["default-src"] == "'none'"
        assert "unsafe" not in csp, "no inline script or style, no eval"


@pytest.mark.parametrize("path", [
    "/", "/services/shop", "/services/nope", "/partials/overview", "/static/dashboard.js",
    "/static/vendor/htmx/htmx.min.js", "/static/nope.js", "/api/v1/health", "/api/v1/services",
    "/api/v1/services/nope", "/openapi.json",
])
def test_every_response_carries_the_security_headers(live: Server, path: str) -> None:
    with live.client() as c:
        r = c.get(path)
    assert_secured(r.headers)


def test_refused_posts_and_the_event_stream_carry_them_too(live: Server) -> None:
    with live.client() as c:
        r = c.post("/api/v1/services/shop/abort", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        assert_secured(r.headers)
        with c.stream("GET", "/api/v1/events/stream") as stream:
            assert_secured(stream.headers)
            assert stream.headers["cache-control"] == "no-store"


def test_the_api_docs_page_may_load_its_cdn_but_is_never_framed(live: Server) -> None:
    with live.client() as c:
        r = c.get("/docs")
    assert_secured(r.headers, docs=True)


def test_the_vendored_libraries_are_pinned_and_carry_their_licences(live: Server) -> None:
    pins = dict(re.findall(r"^(\w+)_VERSION=(\S+)", (REPO / "scripts/vendor-frontend").read_text(), re.M))
    versions = (STATIC / "vendor/VERSIONS").read_text()
    assert f"htmx.org {pins['HTMX']} " in versions and f"uplot {pins['UPLOT']} " in versions
    for library, licence in (("htmx", "Zero-Clause BSD"), ("uplot", "The MIT License")):
        assert licence in (STATIC / "vendor" / library / "LICENSE").read_text()
    with live.client() as c:
        for path, kind in (("/static/vendor/htmx/htmx.min.js", "javascript"),
                           ("/static/vendor/uplot/uPlot.iife.min.js", "javascript"),
                           ("/static/vendor/uplot/uPlot.min.css", "text/css"),
                           ("/static/dashboard.css", "text/css")):
            r = c.get(path)
            assert r.status_code == 200 and kind in r.headers["content-type"], path
    assert f'version:"{pins["HTMX"]}"' in (STATIC / "vendor/htmx/htmx.min.js").read_text()
