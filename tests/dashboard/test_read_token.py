"""A server whose reads need a token: the pages, partials and event stream ask for one; the dashboard's cookie
(or a bearer header) opens them for reading and for nothing else."""

from __future__ import annotations

from pathlib import Path

from stagewise.api.dashboard import COOKIE
from tests.dashboard.conftest import Server, live_controller


def test_pages_need_a_token_when_reads_do_and_the_cookie_reads_only(tmp_path: Path) -> None:
    server = Server(tmp_path, live_controller(tmp_path))
    server.app.state.reads = "token"  # as `stagewise server --reads token` sets it
    server.start()
    try:
        with server.client() as c:
            page = c.get("/")
            assert page.status_code == 401 and 'id="token-ask"' in page.text and 'data-reads="token"' in page.text
            assert c.get("/partials/overview").status_code == 401
            assert c.get("/services/shop").status_code == 401
            assert c.get("/api/v1/events/stream").status_code == 401
            c.cookies.set(COOKIE, "wrong")
            assert c.get("/").status_code == 401
            c.cookies.set(COOKIE, server.token)
            page = c.get("/")
            assert page.status_code == 200 and 'data-reads="token"' in page.text
            assert c.get("/services/nope").status_code == 404
            with c.stream("GET", "/api/v1/events/stream") as stream:
                assert stream.status_code == 200
            refused = c.post("/api/v1/services/shop/pause")
            assert refused.status_code == 401, "a cookie reads; a change needs the Authorization header"
        with server.client(authorised=True) as c:
            assert c.get("/").status_code == 200, "a bearer header reads too"
    finally:
        server.stop()


def test_open_reads_need_nothing(tmp_path: Path) -> None:
    server = Server(tmp_path, live_controller(tmp_path)).start()
    try:
        with server.client() as c:
            page = c.get("/")
            assert page.status_code == 200 and 'data-reads="open"' in page.text
    finally:
        server.stop()
