"""Live refresh: an open page picks up changes made elsewhere, and the pause toggle stops it.

The served admin polls every ``POLL_SECONDS`` (10 minutes); the browser's clock is faked
and fast-forwarded past that, so a poll happens exactly when the test says so.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import BrowserContext, Page, Request, expect

from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow

from .conftest import POLL_SECONDS, LiveServer, PageLog, sync_detail

pytestmark = pytest.mark.browser

SYNC = SyncThirdPartyApiFlow.type_name
PAST_ONE_POLL = (POLL_SECONDS + 1) * 1000


def run_elsewhere(server: LiveServer, flow_id: int, transition: str) -> None:
    """Run ``transition`` on the flow outside the browser (a job or another operator)."""
    with server.app.app_context():
        SyncThirdPartyApiFlow.get(flow_id).run(transition, actor="worker")


def polls_of(requests: list[Request], flow_id: int) -> list[str]:
    return [r.url for r in requests if f"/{flow_id}?" in r.url and "seq=" in r.url]


def test_flow_page_follows_changes_until_paused(
    live_server: LiveServer, context: BrowserContext, page: Page, page_log: PageLog
) -> None:
    server = live_server
    target = server.seeded.fetch_failed[0]
    context.clock.install()
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r))
    server.login(page, sync_detail(server, target))
    panel = page.locator(f"#flow-{target}")
    state = panel.locator(".fs-facts .fs-state").first
    toggle = page.locator("a.fs-live")
    expect(toggle).to_have_text("● live")
    expect(state).to_have_text("failed_to_fetch_third_party_api")
    page.evaluate("window.__marker = 1")

    # Nothing changed: the poll is answered 204 and the panel stays as it is.
    with page.expect_response(lambda r: "seq=" in r.url) as first_poll:
        context.clock.fast_forward(PAST_ONE_POLL)
    assert first_poll.value.status == 204
    expect(state).to_have_text("failed_to_fetch_third_party_api")

    # A change made elsewhere shows up at the next poll, without reloading the page.
    run_elsewhere(server, target, "retry_fetch")
    context.clock.fast_forward(PAST_ONE_POLL)
    expect(state).to_have_text("picked")
    expect(panel.locator("li.fs-step").first).to_contain_text("by worker")
    assert page.evaluate("window.__marker") == 1

    # Paused: the page holds no polling trigger and shows what it loaded.
    toggle.click()
    page.wait_for_url(re.compile(r"live=0"))
    expect(toggle).to_have_text("❚❚ paused")
    expect(page.locator("[hx-trigger*='every']")).to_have_count(0)
    requests.clear()
    run_elsewhere(server, target, "start_third_party_api_request")
    context.clock.fast_forward(PAST_ONE_POLL)
    # A request issued after the fast-forward: any poll it fired was sent before this one.
    assert page.evaluate("fetch(location.href).then(r => r.status)") == 200
    expect(state).to_have_text("picked")
    assert polls_of(requests, target) == []

    # Live again: the toggle reloads the live view, which has the new state and polls.
    toggle.click()
    page.wait_for_url(re.compile(rf"/{target}$"))
    expect(toggle).to_have_text("● live")
    expect(state).to_have_text("fetching_third_party_api")
    expect(page.locator(f"#flow-{target}[hx-trigger*='every']")).to_have_count(1)
    assert page_log.problems() == []
