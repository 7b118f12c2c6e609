"""Bulk retry in a real browser: confirm, then htmx keeps posting batches until done."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow

from .conftest import OPERATOR, LiveServer, PageLog, csp_violations

pytestmark = pytest.mark.browser

SYNC = SyncThirdPartyApiFlow.type_name


def test_bulk_retry_runs_every_batch_by_itself(
    make_server: Callable[..., LiveServer], page: Page, page_log: PageLog
) -> None:
    # One flow per batch and no time budget: every batch is its own request, so the
    # three errored flows take one form POST and three htmx POSTs (the last finds none).
    server = make_server(FLOWSTATE_BULK_BATCH_SIZE=1, FLOWSTATE_BULK_REQUEST_SECONDS=0)
    errored = [*server.seeded.fetch_failed, *server.seeded.save_failed]
    server.login(page, f"/types/{SYNC}?errored=1")
    page.get_by_role("link", name="Retry all errored flows matching this filter…").click()

    expect(page.locator(".fs-bulk-count")).to_contain_text("3 errored flows match")
    page.get_by_label("Reason (recorded in each flow's history)").fill("CRM outage over")
    bulk_posts: list[int] = []
    page.on(
        "response",
        lambda r: bulk_posts.append(r.status) if r.url.endswith("/bulk-retry") else None,
    )
    page.get_by_role("button", name="Retry them now, without canary").click()

    progress = page.locator("#fs-bulk")
    expect(progress.get_by_role("heading")).to_have_text("Done")
    expect(progress.locator(".fs-retried")).to_have_text("3")
    expect(progress.locator(".fs-failed")).to_have_text("0")
    # The form POST, then htmx's own POSTs: the page carried on without a click.
    assert len(bulk_posts) >= 3
    assert set(bulk_posts) == {200}
    with server.app.app_context():
        for flow_id in errored:
            last = SyncThirdPartyApiFlow.get(flow_id).history()[-1]
            assert (last.actor, last.reason) == (OPERATOR, "CRM outage over")
            assert last.name in ("retry_fetch", "retry_save")
    assert sorted(flow_id for _job, flow_id in server.enqueued) == sorted(errored)
    assert page_log.problems() == []
    assert csp_violations(page) == []
