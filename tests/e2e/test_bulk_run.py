"""Canary bulk runs in a real browser: dry run, canary, wait, continue or stop by itself.

The run page drives the run by polling (one htmx POST per step). The test plays the job
worker: it moves the canary's flows on (or fails them again) from its own process, and waits
for the page with Playwright's expectations (a deadline, no sleeps).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow

from .conftest import OPERATOR, LiveServer, PageLog, _fetch, csp_violations, screenshot

pytestmark = pytest.mark.browser

SYNC = SyncThirdPartyApiFlow.type_name
SIZES = ((1440, 900), (1920, 1080))


def more_failures(server: LiveServer, n: int) -> list[int]:
    """Add ``n`` flows whose fetch failed (through the real transitions)."""
    ids = []
    with server.app.app_context():
        for i in range(n):
            flow = SyncThirdPartyApiFlow.create(my_record_id=f"x-{i}", third_party_id=f"crm-x{i}")
            flow.pick()
            _fetch(flow, fail=True)
            ids.append(flow.id)
    server.enqueued.clear()
    return ids


def work(server: LiveServer, ids: list[int], *, fail: bool) -> None:
    """Run the fetch job of each flow, as the worker would after its retry."""
    with server.app.app_context():
        for flow_id in ids:
            _fetch(SyncThirdPartyApiFlow.get(flow_id), fail=fail)


def start_run(server: LiveServer, page: Page, name: str) -> None:
    server.login(page, f"/types/{SYNC}")
    page.goto(
        server.admin(f"/types/{SYNC}/bulk-retry?errored=1&state=failed_to_fetch_third_party_api")
    )
    expect(page.locator(".fs-dry-run")).to_contain_text("retry_fetch: 6 of 6")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        screenshot(page, f"{name}-confirm-{width}x{height}")
    page.get_by_label("Reason (recorded in each flow's history)").fill("CRM back up")
    page.locator("input[name=canary]").fill("2")
    page.locator("input[name=wait]").fill("600")
    page.locator("input[name=rate]").fill("0")
    page.get_by_role("button", name="Start canary run").click()


def test_canary_waits_then_the_run_continues_to_done(
    make_server: Callable[..., LiveServer], page: Page, page_log: PageLog
) -> None:
    server = make_server()
    failed = [*server.seeded.fetch_failed, *more_failures(server, 4)]
    start_run(server, page, "bulk-run")

    run = page.locator(".fs-bulk-run")
    expect(run.locator(".fs-run-status")).to_have_text("waiting")
    expect(run.locator(".fs-retried")).to_have_text("2")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        screenshot(page, f"bulk-run-waiting-{width}x{height}")
    # Still waiting: the canary has not left "picked" and the wait is 600 s.
    expect(run.locator(".fs-run-status")).to_have_text("waiting")
    canary = sorted(failed)[:2]
    work(server, canary, fail=False)

    expect(run.locator(".fs-run-status")).to_have_text("running", timeout=10_000)
    expect(run.locator(".fs-retried")).to_have_text("6", timeout=10_000)
    work(server, sorted(failed)[2:], fail=False)
    expect(run.locator(".fs-run-status")).to_have_text("done", timeout=10_000)
    expect(run.locator(".fs-refailed")).to_have_text("0")
    expect(run.locator(".fs-settled")).to_have_text("6")
    with server.app.app_context():
        for flow_id in failed:
            retry = [
                e for e in SyncThirdPartyApiFlow.get(flow_id).history() if e.name == "retry_fetch"
            ]
            assert [(e.actor, e.reason) for e in retry] == [(OPERATOR, "CRM back up")]

    page.get_by_role("link", name="bulk runs").click()
    expect(page.locator(".fs-bulk-runs tbody tr")).to_have_count(1)
    expect(page.locator(".fs-bulk-runs")).to_contain_text("done")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        screenshot(page, f"bulk-runs-list-{width}x{height}")
    assert page_log.problems() == []
    assert csp_violations(page) == []


def test_a_canary_that_fails_again_stops_the_run(
    make_server: Callable[..., LiveServer], page: Page, page_log: PageLog
) -> None:
    server = make_server()
    failed = [*server.seeded.fetch_failed, *more_failures(server, 4)]
    start_run(server, page, "bulk-run-stop")

    run = page.locator(".fs-bulk-run")
    expect(run.locator(".fs-run-status")).to_have_text("waiting")
    work(server, sorted(failed)[:2], fail=True)

    expect(run.locator(".fs-run-status")).to_have_text("stopped", timeout=10_000)
    expect(run.locator(".fs-stop-reason")).to_have_text(
        "canary: 2 of 2 retried flows failed again (100% > 50%)"
    )
    expect(run.locator(".fs-canary-refailed")).to_have_text("2")
    expect(run.get_by_role("button", name="Stop")).to_have_count(0)
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        screenshot(page, f"bulk-run-stopped-{width}x{height}")
    # The other four were never retried.
    with server.app.app_context():
        for flow_id in sorted(failed)[2:]:
            assert SyncThirdPartyApiFlow.get(flow_id).state == "failed_to_fetch_third_party_api"
    # A reload shows the same stored run.
    page.reload()
    expect(page.locator(".fs-run-status")).to_have_text("stopped")
    assert page_log.problems() == []
    assert csp_violations(page) == []


def test_an_operator_stops_a_running_run(
    make_server: Callable[..., LiveServer], page: Page, page_log: PageLog
) -> None:
    server = make_server()
    more_failures(server, 4)
    server.login(page, f"/types/{SYNC}/bulk-retry?errored=1")
    page.locator("input[name=canary]").fill("1")
    page.locator("input[name=wait]").fill("0")
    page.locator("input[name=rate]").fill("0.001")  # after the canary: about one flow per 17 min
    page.get_by_role("button", name="Start canary run").click()
    run = page.locator(".fs-bulk-run")
    expect(run.locator(".fs-run-status")).to_have_text("running", timeout=10_000)

    run.get_by_role("button", name="Stop").click()

    expect(run.locator(".fs-run-status")).to_have_text("stopped")
    expect(run.locator(".fs-stop-reason")).to_have_text(f"stopped by {OPERATOR}")
    expect(run.locator(".fs-retried")).to_have_text("1")
    assert page_log.problems() == []
