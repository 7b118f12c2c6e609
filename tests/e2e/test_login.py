"""Logging in and out in Chromium: who you are in the header, Log out, the throttle page."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from .conftest import OPERATOR, LiveServer, PageLog, csp_violations, screenshot

pytestmark = pytest.mark.browser


def test_header_shows_the_operator_and_log_out_ends_the_login(
    live_server: LiveServer, page: Page, page_log: PageLog
) -> None:
    server = live_server
    server.login(page)
    header = page.locator("header.fs-top")
    expect(header.locator(".fs-user")).to_have_text(OPERATOR)
    button = header.get_by_role("button", name="Log out")
    expect(button).to_be_visible()
    for width, height in ((1440, 900), (1920, 1080)):
        page.set_viewport_size({"width": width, "height": height})
        # The user and the button sit inside the header, on its right, on one line.
        box, head = button.bounding_box(), header.bounding_box()
        assert box is not None and head is not None
        assert box["x"] + box["width"] <= head["x"] + head["width"]
        assert box["y"] >= head["y"] and box["y"] + box["height"] <= head["y"] + head["height"]
        assert box["x"] > head["x"] + head["width"] / 2
        screenshot(page, f"admin-header-logged-in-{width}x{height}")
    assert csp_violations(page) == []
    cookies = page.context.cookies()
    button.click()
    page.wait_for_url("**/login")
    expect(page.get_by_label("Password")).to_be_visible()
    # The cookie the browser had before logging out no longer opens the admin.
    other = page.context.browser
    assert other is not None
    thief = other.new_context()
    thief.add_cookies(cookies)  # type: ignore[arg-type]
    stolen = thief.new_page()
    stolen.goto(server.admin("/"))
    assert "/login" in stolen.url
    thief.close()
    assert page_log.problems() == []


def test_throttled_login_page(
    make_server: Callable[..., LiveServer], page: Page, page_log: PageLog
) -> None:
    server = make_server(FLOWSTATE_LOGIN_LIMIT="2 per minute")
    page.goto(f"{server.url}/login")
    for _ in range(2):
        page.get_by_label("Password").fill("wrong")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("Wrong password")
    page.get_by_label("Password").fill("wrong")
    with page.expect_response(lambda r: r.url.endswith("/login")) as info:
        page.get_by_role("button", name="Log in").click()
    response = info.value
    assert response.status == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-content-type-options"] == "nosniff"
    expect(page.get_by_role("alert")).to_contain_text("Too many failed logins")
    page.set_viewport_size({"width": 1440, "height": 900})
    screenshot(page, "login-throttled-1440x900")
    assert csp_violations(page) == []
    # The browser logs a console error for the 401/429 document responses: that is all.
    assert all("401" in p or "429" in p for p in page_log.problems()), page_log.problems()
