"""Every main admin page loads cleanly in Chromium: no console error, no CSP violation."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from flowstate_web.demo.orders_flow import OrderFulfilmentFlow
from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow

from .conftest import LiveServer, PageLog, csp_violations

pytestmark = pytest.mark.browser

SYNC = SyncThirdPartyApiFlow.type_name
ORDERS = OrderFulfilmentFlow.type_name


def test_main_pages_load_without_errors_under_the_csp(
    live_server: LiveServer, page: Page, page_log: PageLog
) -> None:
    server = live_server
    done = server.seeded.completed[0]
    failed = server.seeded.label_failed[0]
    server.login(page)
    with server.app.app_context():
        artefact_id = SyncThirdPartyApiFlow.get(done).artefacts()[0].id
    pages = {
        "/": "Flow types",
        f"/types/{SYNC}": SYNC,
        f"/types/{SYNC}?state=completed&live=0": SYNC,
        f"/types/{ORDERS}?errored=1": ORDERS,
        f"/types/{SYNC}/{done}": f"{SYNC} #{done}",
        f"/types/{ORDERS}/{failed}": f"{ORDERS} #{failed}",
        f"/types/{SYNC}/{done}/artefacts/{artefact_id}": "third_party_api_response",
        f"/types/{SYNC}/bulk-retry?errored=1": "Retry",
    }
    for path, heading in pages.items():
        response = page.goto(server.admin(path))
        assert response is not None
        assert response.status == 200, path
        csp = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp, path
        expect(page.locator("h1")).to_contain_text(heading)
        # htmx (vendored, same origin) ran, and both stylesheets applied (plus the heat
        # map's on a type page).
        assert page.evaluate("typeof window.htmx") == "object", path
        sheets = 3 if path.split("?")[0].count("/") == 2 else 2
        assert page.evaluate("document.styleSheets.length") == sheets, path
        assert csp_violations(page) == [], path
    assert page_log.problems() == []


def test_diagram_states_link_to_the_filtered_list(live_server: LiveServer, page: Page) -> None:
    live_server.login(page, f"/types/{SYNC}")
    diagram = page.locator("#flowstate-type-diagram svg")
    expect(diagram).to_be_visible()
    diagram.locator("a", has_text="completed").first.click()
    page.wait_for_url(f"**/types/{SYNC}?state=completed")
    expect(page.locator("#fs-list tbody tr.fs-row")).to_have_count(
        len(live_server.seeded.completed)
    )


def test_a_page_under_attack_reports_csp_violations(live_server: LiveServer, page: Page) -> None:
    """The CSP spy works: an injected inline script is refused and recorded."""
    live_server.login(page)
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.__pwned = 1'; document.body.appendChild(s); }"
    )
    page.wait_for_function("window.__cspViolations.length > 0")
    assert page.evaluate("window.__pwned") is None
    assert any("script-src" in v for v in csp_violations(page))


def test_a_long_unbroken_reason_and_prop_change_wrap(live_server: LiveServer, page: Page) -> None:
    """A reason (up to 2,000 characters, no spaces) wraps instead of widening the flow page."""
    server = live_server
    flow_id = server.seeded.in_progress[0]
    with server.app.app_context():
        flow = SyncThirdPartyApiFlow.get(flow_id)
        flow.third_party_etag = "e" * 600
        flow.save(actor="ops@example.com", reason="w" * 2000)
    server.login(page, f"/types/{SYNC}/{flow_id}")
    expect(page.locator(".fs-reason-text").first).to_contain_text("w" * 50)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= (page.viewport_size or {"width": 1440})["width"]
