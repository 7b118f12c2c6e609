"""The issue's scenario in a real browser: find an errored flow, retry it, see it change.

Every "without a reload" claim is checked with a marker set on ``window`` before the click:
a full page load would wipe it. Waiting is Playwright's auto-waiting ``expect``, never sleep.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow

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


def state_of(widget: Locator) -> Locator:
    """Return the current-state badge of a flow widget (panel or list row)."""
    return widget.locator(".fs-facts .fs-state, td .fs-state").first


def set_marker(page: Page) -> None:
    page.evaluate("window.__marker = 1")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_retry_errored_flow_from_overview(
    backend: str,
    request: pytest.FixtureRequest,
    make_server: Callable[..., LiveServer],
    page: Page,
    page_log: PageLog,
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    server = make_server(url)
    target = server.seeded.fetch_failed[0]
    server.login(page)

    # Overview: the sync type shows its three errored flows as a link to the filtered list.
    expect(page.get_by_role("heading", name="Flow types")).to_be_visible()
    sync_row = page.locator("tr.fs-type-row").filter(
        has=page.get_by_role("link", name=SYNC, exact=True)
    )
    errored_link = sync_row.locator("a.fs-badge-error")
    expect(errored_link).to_have_text("3")
    if backend == "sqlite":
        screenshot(page, "overview")
    errored_link.click()

    # Flow type, errored only: the diagram and exactly the errored flows.
    page.wait_for_url(re.compile(rf"/flows/types/{SYNC}\?errored=1$"))
    expect(page.locator("#flowstate-type-diagram svg")).to_be_visible()
    rows = page.locator("#fs-list tbody tr.fs-row")
    expect(rows).to_have_count(3)
    expect(page.locator(f"#flow-{target}")).to_contain_text("timed out after 30s")
    if backend == "sqlite":
        screenshot(page, "flow_type_errored")
    page.locator(f"#flow-{target}").get_by_role("link", name=f"#{target}").click()

    # Flow detail: retry with a reason; the panel swaps in place.
    page.wait_for_url(re.compile(rf"/flows{re.escape(sync_detail(server, target))}$"))
    panel = page.locator(f"#flow-{target}")
    expect(state_of(panel)).to_have_text("failed_to_fetch_third_party_api")
    expect(panel.locator(".fs-error-box")).to_contain_text("FakeApiError")
    set_marker(page)
    panel.get_by_label("Reason for the retry").fill("CRM is back up")
    panel.get_by_role("button", name="Retry: retry_fetch").click()

    expect(state_of(panel)).to_have_text("picked")
    expect(panel.get_by_role("status")).to_contain_text(
        "Retried with retry_fetch: failed_to_fetch_third_party_api → picked"
    )
    assert_not_reloaded(page)
    newest = panel.locator("li.fs-step").first
    expect(newest).to_contain_text("retry_fetch")
    expect(newest.locator(".fs-actor")).to_have_text(f"by {OPERATOR}")
    expect(newest).to_contain_text("CRM is back up")
    expect(panel.locator(".fs-error-box")).to_have_count(0)
    if backend == "sqlite":
        screenshot(page, "flow_detail_after_retry")

    # The engine agrees, and the retry's after-commit callback enqueued the fetch again.
    assert flow_state(server, target) == ("picked", OPERATOR)
    assert server.enqueued == [("fetch_third_party", target)]
    assert page_log.problems() == []
    assert csp_violations(page) == []


def test_retry_from_the_list_swaps_only_that_row(
    live_server: LiveServer, page: Page, page_log: PageLog
) -> None:
    server = live_server
    target = server.seeded.save_failed[0]
    other = server.seeded.fetch_failed[0]
    server.login(page, f"/types/{SYNC}?errored=1")
    row = page.locator(f"#flow-{target}")
    expect(state_of(row)).to_have_text("failed_to_save_my_record")
    set_marker(page)

    row.get_by_role("button", name="Retry: retry_save").click()

    expect(state_of(row)).to_have_text("fetched_third_party_api")
    expect(row.get_by_role("status")).to_contain_text("Retried with retry_save")
    expect(state_of(page.locator(f"#flow-{other}"))).to_have_text("failed_to_fetch_third_party_api")
    assert_not_reloaded(page)
    assert flow_state(server, target) == ("fetched_third_party_api", OPERATOR)
    assert server.enqueued == [("save_local_record", target)]
    assert page_log.problems() == []


def test_second_retry_from_a_stale_tab_shows_the_conflict_in_place(
    live_server: LiveServer, context: BrowserContext, page: Page, page_log: PageLog
) -> None:
    server = live_server
    target = server.seeded.fetch_failed[1]
    path = sync_detail(server, target)
    server.login(page, path)
    second = context.new_page()
    second.goto(server.admin(path))
    stale_panel = second.locator(f"#flow-{target}")
    expect(state_of(stale_panel)).to_have_text("failed_to_fetch_third_party_api")

    page.locator(f"#flow-{target}").get_by_role("button", name="Retry: retry_fetch").click()
    expect(state_of(page.locator(f"#flow-{target}"))).to_have_text("picked")

    # The second tab still offers the retry; its POST is refused and says why, in place.
    set_marker(second)
    retry_url = f"{path}/retry"
    with second.expect_response(lambda r: retry_url in r.url) as refused:
        stale_panel.get_by_role("button", name="Retry: retry_fetch").click()
    assert refused.value.status == 409
    alert = stale_panel.get_by_role("alert")
    expect(alert).to_contain_text("Not retried")
    expect(alert).to_contain_text("retry_fetch")
    expect(alert).to_contain_text("picked")
    expect(state_of(stale_panel)).to_have_text("picked")
    expect(stale_panel.get_by_role("button", name="Retry: retry_fetch")).to_have_count(0)
    assert_not_reloaded(second)

    # One retry in the history, one job: the refused attempt changed nothing.
    state, actor = flow_state(server, target)
    assert (state, actor) == ("picked", OPERATOR)
    assert server.enqueued == [("fetch_third_party", target)]
    with server.app.app_context():
        names = [h.name for h in SyncThirdPartyApiFlow.get(target).history()]
    assert names.count("retry_fetch") == 1
    # Chromium and htmx both log the refused request (HTTP 409); any other error is a bug.
    unexpected = [e for e in page_log.problems() if not ("409" in e and retry_url in e)]
    assert unexpected == []


def test_without_htmx_the_retry_form_still_works_with_a_reload(
    live_server: LiveServer, page: Page, page_log: PageLog
) -> None:
    """Progressive enhancement, and proof that the marker notices a reload."""
    server = live_server
    target = server.seeded.fetch_failed[0]
    page.route("**/htmx.min.js", lambda route: route.abort())
    server.login(page, sync_detail(server, target))
    assert page.evaluate("typeof window.htmx") == "undefined"
    set_marker(page)
    panel = page.locator(f"#flow-{target}")

    panel.get_by_role("button", name="Retry: retry_fetch").click()

    expect(state_of(panel)).to_have_text("picked")
    expect(page.locator("#fs-alerts")).to_contain_text("Retried with retry_fetch")
    assert page.evaluate("window.__marker") is None  # a full page load happened
    assert flow_state(server, target) == ("picked", OPERATOR)
    assert [e for e in page_log.problems() if "htmx.min.js" not in e] == []
