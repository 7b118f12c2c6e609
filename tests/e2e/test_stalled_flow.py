"""A stalled flow in a real browser: see it on the overview, find it, fail it in place.

Time is controlled by writing ``state_entered_at`` in the past (no sleeping); waiting is
Playwright's auto-waiting ``expect``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import update

from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow
from flowstate_web.models import flows

from .conftest import (
    OPERATOR,
    LiveServer,
    PageLog,
    csp_violations,
    flow_state,
    screenshot,
    sync_detail,
)

pytestmark = pytest.mark.browser

SYNC = SyncThirdPartyApiFlow.type_name


def entered_ago(server: LiveServer, flow_id: int, ago: timedelta) -> None:
    with server.app.app_context():
        from flowstate_web.app import db

        db.session.execute(
            update(flows)
            .where(flows.c.id == flow_id)
            .values(state_entered_at=datetime.now(UTC) - ago)
        )
        db.session.commit()
        db.session.remove()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_fail_a_stalled_flow_from_the_overview(
    backend: str,
    request: pytest.FixtureRequest,
    make_server: object,
    page: Page,
    page_log: PageLog,
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    server: LiveServer = make_server(url)  # type: ignore[operator]
    _waiting, picked, fetching = server.seeded.in_progress
    entered_ago(server, fetching, timedelta(minutes=12))  # timeout 2m
    entered_ago(server, picked, timedelta(minutes=40))  # the type's default, 15m
    shots = backend == "sqlite"
    server.login(page)

    # Overview: two stalled flows, next to the errored ones, linking to the filtered list.
    row = page.locator("tr.fs-type-row").filter(has=page.get_by_role("link", name=SYNC, exact=True))
    stalled_link = row.locator("a.fs-badge-stalled")
    expect(stalled_link).to_have_text("2")
    if shots:
        screenshot(page, "stalled_overview")
    stalled_link.click()

    page.wait_for_url(re.compile(rf"/flows/types/{SYNC}\?stalled=1$"))
    expect(page.get_by_label("stalled only")).to_be_checked()
    rows = page.locator("#fs-list tbody tr.fs-row")
    expect(rows).to_have_count(2)
    expect(page.locator(f"#flow-{picked}")).to_contain_text("No transition into an error state")
    if shots:
        screenshot(page, "stalled_type_list")
    page.locator(f"#flow-{fetching}").get_by_role("link", name=f"#{fetching}").click()

    # The flow page: since when, in which state, what it waits for; then fail it in place.
    page.wait_for_url(re.compile(rf"/flows{re.escape(sync_detail(server, fetching))}$"))
    panel = page.locator(f"#flow-{fetching}")
    box = panel.locator(".fs-stall-box")
    expect(box).to_contain_text("Stalled since")
    expect(box).to_contain_text("in fetching_third_party_api for 12m")
    expect(box).to_contain_text("timeout 2m)")
    expect(box).to_contain_text("Entered by start_third_party_api_request")
    if shots:
        screenshot(page, "stalled_flow_detail")
    page.evaluate("window.__marker = 1")
    box.get_by_label("Reason for failing it").fill("CRM call hung; retrying by hand")
    box.get_by_role("button", name="Fail it: fail_third_party_api_request").click()

    expect(panel.locator(".fs-facts .fs-state").first).to_have_text(
        "failed_to_fetch_third_party_api"
    )
    expect(panel.get_by_role("status")).to_contain_text(
        "Failed with fail_third_party_api_request: fetching_third_party_api"
        " → failed_to_fetch_third_party_api"
    )
    expect(panel.locator(".fs-error-box")).to_contain_text("FlowTimedOutError")
    expect(panel.locator(".fs-error-box")).to_contain_text("stalled in state")
    expect(panel.get_by_role("button", name="Retry: retry_fetch")).to_be_visible()
    expect(panel.locator(".fs-stall-box")).to_have_count(0)
    newest = panel.locator("li.fs-step").first
    expect(newest.locator(".fs-actor")).to_have_text(f"by {OPERATOR}")
    expect(newest).to_contain_text("CRM call hung; retrying by hand")
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    if shots:
        screenshot(page, "stalled_flow_failed")

    assert flow_state(server, fetching) == ("failed_to_fetch_third_party_api", OPERATOR)
    assert page_log.problems() == []
    assert csp_violations(page) == []
