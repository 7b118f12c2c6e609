"""Bulk re-dispatch in a real browser: from the stalled list, confirm, batches run by htmx."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow

from .conftest import LiveServer, PageLog, csp_violations, screenshot
from .test_stalled_flow import entered_ago

pytestmark = pytest.mark.browser

SYNC = SyncThirdPartyApiFlow.type_name


def test_redispatch_all_stalled_flows(make_server: object, page: Page, page_log: PageLog) -> None:
    server: LiveServer = make_server(None)  # type: ignore[operator]
    _waiting, picked, fetching = server.seeded.in_progress
    entered_ago(server, fetching, timedelta(minutes=12))
    entered_ago(server, picked, timedelta(minutes=40))
    server.login(page, f"/types/{SYNC}?stalled=1")
    page.get_by_role("link", name="Re-dispatch all stalled flows matching this filter…").click()
    page.wait_for_url(re.compile(rf"/flows/types/{SYNC}/bulk-redispatch\?stalled=1$"))
    expect(page.locator(".fs-bulk-count")).to_contain_text("2 stalled flows")
    for width, height in ((1440, 900), (1920, 1080)):
        page.set_viewport_size({"width": width, "height": height})
        screenshot(page, f"bulk_redispatch_confirm_{width}")
    page.get_by_label("Reason (recorded with each re-dispatch)").fill("worker lost its jobs")
    page.get_by_role("button", name="Re-dispatch the stalled flows").click()
    expect(page.locator("#fs-bulk h2")).to_have_text("Done")
    tally = page.locator(".fs-bulk-tally")
    expect(tally).to_contain_text("Re-dispatched")
    # picked was entered by pick (enqueue="fetch_third_party"); fetching by a transition
    # without a hand-off.
    expect(page.locator(".fs-retried")).to_have_text("1")
    expect(page.locator(".fs-skipped")).to_have_text("1")
    expect(page.locator(".fs-reasons")).to_contain_text(
        "state 'fetching_third_party_api' was entered by a transition that hands no job"
    )
    screenshot(page, "bulk_redispatch_done")
    assert page_log.problems() == []
    assert csp_violations(page) == []
