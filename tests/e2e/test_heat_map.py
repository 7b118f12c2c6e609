"""The type page's heat map in Chromium: figures on hover and keyboard focus, links to the
filtered lists, the window selector; screenshots at 1440x900 and 1920x1080."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from flowstate_web import rollup
from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow

from .conftest import LiveServer, PageLog, csp_violations, screenshot

pytestmark = pytest.mark.browser

SYNC = SyncThirdPartyApiFlow.type_name
FETCHING = "#state-fetching_third_party_api"
FAIL_EDGE = "#edge-fail_third_party_api_request-fetching_third_party_api"
PICK_EDGE = "#edge-pick-pending"


def rolled_up(make_server: Callable[..., LiveServer]) -> LiveServer:
    server = make_server()
    with server.app.app_context():
        from flowstate_web.app import db

        assert rollup.run() > 0
        db.session.remove()
    return server


@pytest.mark.parametrize("size", [(1440, 900), (1920, 1080)])
def test_heat_map_figures_and_links(
    size: tuple[int, int],
    make_server: Callable[..., LiveServer],
    page: Page,
    page_log: PageLog,
) -> None:
    server = rolled_up(make_server)
    page.set_viewport_size({"width": size[0], "height": size[1]})
    server.login(page, f"/types/{SYNC}")
    tip = page.locator("#fs-heat-tip")
    expect(tip).to_be_hidden()

    # Hover a state: its figures appear.
    page.locator(f"{FETCHING} a").hover()
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("fetching_third_party_api")
    expect(tip).to_contain_text("time in state (last 24 h")
    # Focus an edge from the keyboard: it is in the tab order and shows its figures.
    edge = page.locator(PICK_EDGE)
    assert edge.evaluate("el => el.tabIndex") == 0
    edge.focus()
    expect(tip).to_contain_text("pick: pending → picked")
    expect(tip).to_contain_text("taken 8\u00d7 in the last 24 h")
    page.keyboard.press("Escape")
    expect(tip).to_be_hidden()
    # The failure edge: its rate, then a click opens the errored flows in its error state.
    page.locator(f"{FAIL_EDGE} a.heat-link").focus()
    expect(tip).to_contain_text("failure rate 33% of 6 transitions out of fetching_third_party_api")
    w, h = size
    screenshot(page, f"heat-map-{w}x{h}")
    page.locator(f"{FAIL_EDGE} path").first.click()
    page.wait_for_url(
        re.compile(rf"/types/{SYNC}\?state=failed_to_fetch_third_party_api&errored=1")
    )
    expect(page.locator("#fs-list tbody tr.fs-row")).to_have_count(2)
    assert csp_violations(page) == []
    assert page_log.problems() == []


def test_state_click_and_window_selector(
    make_server: Callable[..., LiveServer], page: Page, page_log: PageLog
) -> None:
    server = rolled_up(make_server)
    page.set_viewport_size({"width": 1440, "height": 900})
    server.login(page, f"/types/{SYNC}")
    page.get_by_role("link", name="7d", exact=True).click()
    page.wait_for_url(re.compile(r"window=7d"))
    expect(page.locator(".fs-heat-current")).to_have_text("7d")
    page.locator(PICK_EDGE).focus()
    expect(page.locator("#fs-heat-tip")).to_contain_text("in the last 7 days")
    page.locator(f"{FETCHING} a").click()
    page.wait_for_url(re.compile(rf"/types/{SYNC}\?state=fetching_third_party_api$"))
    assert page_log.problems() == []
