"""Remap of an orphaned state in a real browser: overview list, preview, remap, history."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import update

from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow
from flowstate_web.models import flows

from .conftest import OPERATOR, LiveServer, PageLog, csp_violations, screenshot

pytestmark = pytest.mark.browser

SYNC = SyncThirdPartyApiFlow.type_name
SIZES = ((1440, 900), (1920, 1080))


def test_remap_an_orphaned_state_from_the_overview(
    make_server: Callable[..., LiveServer], page: Page, page_log: PageLog
) -> None:
    from flowstate_web.app import db

    server = make_server()
    moved = server.seeded.fetch_failed
    with server.app.app_context():
        # As if the class had renamed its state: the rows keep the old name.
        stmt = update(flows).where(flows.c.id.in_(moved)).values(state="fetch_failed_v1")
        db.session.execute(stmt)
        db.session.commit()
    server.login(page, "/")

    orphans = page.locator(".fs-orphans")
    expect(orphans).to_contain_text("fetch_failed_v1")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        screenshot(page, f"remap-overview-{width}x{height}")
    orphans.get_by_role("link", name="Remap…").click()

    expect(page.locator(".fs-remap-count")).to_have_text(str(len(moved)))
    page.get_by_label("Move them to").select_option("failed_to_fetch_third_party_api")
    page.get_by_label("Reason (recorded in each flow's history)").fill("state renamed in v2")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        screenshot(page, f"remap-confirm-{width}x{height}")
    page.get_by_role("button", name=f"Remap {len(moved)} flows").click()

    expect(page.locator("#fs-remap h2")).to_have_text("Done")
    expect(page.locator(".fs-remapped")).to_have_text(str(len(moved)))
    with server.app.app_context():
        flow = SyncThirdPartyApiFlow.get(moved[0])
        entry = flow.history()[-1]
        assert (flow.state, flow.errored) == ("failed_to_fetch_third_party_api", True)
        assert (entry.kind, entry.actor, entry.reason) == ("remap", OPERATOR, "state renamed in v2")
    page.goto(server.admin(f"/types/{SYNC}/{moved[0]}"))
    expect(page.locator(".fs-timeline")).to_contain_text("remapped")
    page.goto(server.admin("/"))
    expect(page.locator(".fs-orphans")).to_have_count(0)
    assert page_log.problems() == []
    assert csp_violations(page) == []
