"""What an operator sees: error pages, long messages, the type page's diagram, live pause.

Each test drives Debian's Chromium against the live admin (see ``conftest.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from flowstate_web.demo.orders_flow import OrderFulfilmentFlow
from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow

from .conftest import LiveServer, PageLog, csp_violations, screenshot

pytestmark = pytest.mark.browser

SYNC = SyncThirdPartyApiFlow.type_name
ORDERS = OrderFulfilmentFlow.type_name


def no_sideways_scroll(page: Page) -> bool:
    sizes: list[int] = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    return sizes[0] <= sizes[1]


def test_400_403_and_404_render_as_pages(
    make_server: Callable[..., LiveServer], page: Page, page_log: PageLog
) -> None:
    server = make_server(FLOWSTATE_READ_ONLY=True)
    server.login(page)
    cases = {
        f"/types/{SYNC}?created_from=yesterday": (400, "created_from"),
        f"/types/{SYNC}/bulk-retry": (403, "read-only"),
        "/types/NoSuchFlow": (404, "NoSuchFlow"),
        f"/types/{SYNC}/99999": (404, "99999"),
    }
    for path, (status, says) in cases.items():
        response = page.goto(server.admin(path))
        assert response is not None
        assert response.status == status, path
        assert response.headers["content-type"] == "text/html; charset=utf-8", path
        # Rendered, not shown as source: a heading element, no visible markup.
        expect(page.locator("h1")).to_contain_text(str(status))
        expect(page.locator(".fs-error-text")).to_contain_text(says)
        assert "<!doctype" not in page.locator("body").inner_text().lower(), path
        assert page.evaluate("document.styleSheets.length") == 2, path
        assert csp_violations(page) == [], path
    assert page_log.problems() == [] or all("40" in p for p in page_log.problems())


def test_a_2000_character_error_wraps_instead_of_pushing_the_page(
    live_server: LiveServer, page: Page
) -> None:
    server = live_server
    blob = "x" * 2000  # no space, no hyphen: a base64 payload or a long URL
    with server.app.app_context():
        flow = SyncThirdPartyApiFlow.create(my_record_id="rec-long", third_party_id="crm-long")
        flow.pick()
        flow.start_third_party_api_request()
        try:
            raise TimeoutError(blob)
        except TimeoutError:
            flow.fail_third_party_api_request()
        flow_id = flow.id
    server.login(page, f"/types/{SYNC}?errored=1&live=0")
    expect(page.locator(f"#flow-{flow_id} .fs-last-error")).to_contain_text("xxxx")
    assert no_sideways_scroll(page)
    page.goto(server.admin(f"/types/{SYNC}/{flow_id}?live=0"))
    expect(page.locator(".fs-error-message")).to_contain_text("xxxx")
    assert no_sideways_scroll(page)
    # The diagram stays on screen, beside the message.
    box = page.locator("#flowstate-flow-diagram").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1440
    page.locator(".fs-step-error-details summary").first.click()
    assert no_sideways_scroll(page)
    screenshot(page, "long_error_message")


@pytest.mark.parametrize("size", [(1440, 900), (1920, 1080)])
def test_type_diagram_is_legible_and_zooms(
    live_server: LiveServer, context: BrowserContext, page: Page, size: tuple[int, int]
) -> None:
    page.set_viewport_size({"width": size[0], "height": size[1]})
    live_server.login(page, f"/types/{ORDERS}?live=0")
    figure = page.locator("#flowstate-type-diagram")
    expect(figure).to_have_attribute("data-zoom", "on")
    svg = figure.locator("svg")
    width = svg.bounding_box()["width"]  # type: ignore[index]
    assert width > size[0] * 0.35  # no longer a thumbnail in a narrow column

    def label_px() -> float:
        # Rendered height of a state's name: its font size times the zoom.
        found: float = page.evaluate(
            """() => {
              const t = document.querySelector('#flowstate-type-diagram .state text');
              return t.getBoundingClientRect().height;
            }"""
        )
        return found

    assert label_px() >= 11.5, "state names must be legible at 100% browser zoom"
    scale = figure.locator(".flowstate-diagram-scale")
    before = label_px()
    figure.get_by_role("button", name="Zoom in").click()
    assert label_px() > before * 1.2
    figure.get_by_role("button", name="1:1").click()
    expect(scale).to_have_text("100%")

    # Expand: the diagram takes the window; Escape gives the page back.
    figure.get_by_role("button", name="Expand").click()
    expect(figure).to_have_class(re.compile("is-expanded"))
    fig_box = figure.bounding_box()
    assert fig_box is not None and fig_box["width"] >= size[0] - 20
    page.keyboard.press("Escape")
    expect(figure).not_to_have_class(re.compile("is-expanded"))

    # A drag pans (scrolls the box) and does not follow the state link under it.
    figure.get_by_role("button", name="Zoom in").click()
    figure.get_by_role("button", name="Zoom in").click()
    box = figure.locator(".flowstate-diagram-svg")
    area = box.bounding_box()
    assert area is not None
    start_url = page.url
    page.mouse.move(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] / 2 - 120, area["y"] + area["height"] / 2 - 80)
    page.mouse.up()
    assert box.evaluate("el => el.scrollLeft + el.scrollTop") > 0
    assert page.url == start_url
    assert csp_violations(page) == []
    figure.get_by_role("button", name="Fit").click()
    screenshot(page, f"type_page_{size[0]}")


def test_live_pause_is_kept_across_pages(live_server: LiveServer, page: Page) -> None:
    server = live_server
    server.login(page, f"/types/{SYNC}")
    toggle = page.locator("a.fs-live")
    expect(toggle).to_have_text("● live")
    toggle.click()
    page.wait_for_url(re.compile(r"live=0"))
    # Another page, opened from a link that does not carry live=0: still paused.
    page.goto(server.admin("/"))
    page.wait_for_url(re.compile(r"live=0"))
    expect(page.locator("a.fs-live")).to_have_text("❚❚ paused")
    expect(page.locator("[hx-trigger*='every']")).to_have_count(0)
    page.goto(server.admin(f"/types/{SYNC}/{server.seeded.completed[0]}"))
    expect(page.locator("a.fs-live")).to_have_text("❚❚ paused")
    # Resumed: live everywhere again.
    page.locator("a.fs-live").click()
    expect(page.locator("a.fs-live")).to_have_text("● live")
    page.goto(server.admin("/"))
    expect(page.locator("a.fs-live")).to_have_text("● live")
    assert "live=0" not in page.url
