"""The Approve button in a real browser (Debian's Chromium, as in test_browser.py): refused and then hidden for a
viewer's token, taken from an operator's — whose name the approval then carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import SERVICE, Stagewise
from tests.e2e.test_browser import Dashboard, apply
from tests.e2e.test_browser import browser as browser  # the Chromium fixture, reused here

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GATED: dict[str, Any] = {"canary": {"steps": [{"setWeight": 20}, {"approval": {"approvers": ["otto"]}}]}}


def token(sw: Stagewise, name: str, role: str) -> str:
    assert sw.client is not None
    made: dict[str, str] = sw.client.post("/api/v1/tokens", {"name": name, "role": role})
    return made["token"]


def test_the_approve_button_is_refused_and_hidden_for_a_viewer_and_works_for_an_operator(
        stagewise: Stagewise, browser: Any, tmp_path: Path) -> None:
    sw = stagewise
    viewer, operator = token(sw, "vera", "viewer"), token(sw, "otto", "operator")
    apply(sw, "v1", {"full": {}})
    assert sw.wait()["phase"] == "Succeeded"
    apply(sw, "v2", GATED)
    sw.wait({"Waiting"})

    ui = Dashboard(browser, sw, tmp_path)
    try:
        page = ui.page
        page.goto(f"{ui.url}/services/{SERVICE}")
        ui.phase_is("Waiting")
        assert "approval: 0/1 from otto" in page.locator("#waiting").inner_text()
        page.click('[data-action="approve"]')
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#token-input", viewer)
        page.click("#token-save")
        page.wait_for_selector(".toast.error:has-text('Approve: refused')")
        assert "the token 'vera' (role viewer) may not approve" in page.locator(".toast.error").inner_text()
        page.wait_for_selector('[data-action="approve"]', state="hidden")
        assert page.locator('[data-action="abort"]').is_hidden() and page.locator("#whoami").inner_text() == \
            "token vera (viewer)"
        ui.screenshot("approve-viewer.png")
        assert sw.status()["phase"] == "Waiting", "a viewer's click changed nothing"
        ui.problems = [p for p in ui.problems if "403" not in p]  # the refused call, on purpose
        ui.assert_clean()
    finally:
        ui.close()

    ui = Dashboard(browser, sw, tmp_path)
    try:
        page = ui.page
        page.goto(f"{ui.url}/services/{SERVICE}")
        page.click('[data-action="approve"]')
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#token-input", operator)
        page.click("#token-save")
        ui.phase_is("Succeeded")
        assert page.locator('[data-action="approve"]').is_visible() is False or \
            page.locator('[data-action="approve"]').is_disabled()
        assert page.locator('[data-action="abort"]').is_hidden(), "an operator may not abort: no Abort button"
        ui.screenshot("approve-operator.png")
        ui.assert_clean()
    finally:
        ui.close()
    status = sw.status()
    assert status["stable"] == "v2"
    assert [(a["by"], a["gate"]) for a in status["delivery"]["approvals"]] == [("otto", "approval@1")]
    messages = [e["message"] for e in status["events"]]
    assert "approved by otto (approval@1)" in messages
    assert any(m.startswith("approval refused") for m in messages) is False, "the viewer was refused by its role"
