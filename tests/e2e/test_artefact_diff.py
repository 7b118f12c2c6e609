"""The flow page's artefact diff and the type page's lint box, in Chromium (1440 and 1920 wide)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, select

from flowstate_web import Artefact, Flow, Prop, State, transition
from flowstate_web.demo.orders_flow import OrderFulfilmentFlow
from flowstate_web.demo.seed import seed
from flowstate_web.models import artefacts

from .conftest import LiveServer, PageLog, csp_violations, screenshot

pytestmark = pytest.mark.browser


class ShippingQuoteFlow(Flow, type_name="ShippingQuoteFlow"):
    """Ask a carrier for a quote; an operator can ask again when it is refused."""

    order_ref = Prop(str)

    pending = State(initial=True)
    quoted = State()
    refused = State(error=True)
    expired = State(error=True)
    booked = State(final=True)

    quote = Artefact(dict[str, Any])

    @transition(source=pending, target=quoted, persists=quote)
    def receive_quote(self, quote: dict[str, Any]) -> dict[str, Any]:
        """Keep the carrier's quote."""
        return quote

    @transition(source=quoted, target=refused)
    def refuse(self) -> None:
        """Our checks refused the quote."""

    @transition(source=refused, target=pending, retry=True)
    def ask_again(self) -> None:
        """Ask the carrier for a new quote."""

    @transition(source=quoted, target=expired)
    def expire(self) -> None:
        """Nobody booked it in time (deliberately left without a retry: lint warns)."""

    @transition(source=quoted, target=booked)
    def book(self) -> None:
        """Book the shipment."""


FIRST = {
    "carrier": "DHL",
    "price": {"amount": 1299, "currency": "EUR"},
    "services": ["standard"],
    "eta_days": 5,
    "warnings": ["address not verified"],
}
SECOND = {
    "carrier": "DHL",
    "price": {"amount": 1149, "currency": "EUR"},
    "services": ["standard", "express"],
    "eta_days": 3,
    "address_id": "ad-77",
}


def quoted_twice(server: LiveServer) -> tuple[int, int]:
    with server.app.app_context():
        flow = ShippingQuoteFlow.create(order_ref="ORD-2001")
        flow.receive_quote(FIRST)
        try:
            raise ValueError("quote refused: address not verified")
        except ValueError:
            flow.refuse()
        flow.run("ask_again", actor="e2e-operator", reason="address fixed by support")
        flow.receive_quote(SECOND)
        return flow.id, flow.quote.versions()[1].id


@pytest.mark.parametrize("size", [(1440, 900), (1920, 1080)])
def test_diff_between_artefact_versions(
    live_server: LiveServer, page: Page, page_log: PageLog, size: tuple[int, int]
) -> None:
    flow_id, v2 = quoted_twice(live_server)
    page.set_viewport_size({"width": size[0], "height": size[1]})
    live_server.login(page, f"/types/ShippingQuoteFlow/{flow_id}?live=0")
    diff = page.locator(f"#artefact-diff-{v2}")
    summary = diff.locator("summary")
    expect(summary).to_contain_text("changes in quote v2 since v1 (step 1, receive_quote)")
    expect(summary).to_contain_text("+2 added")
    expect(summary).to_contain_text("\u22121 removed")
    expect(summary).to_contain_text("~2 changed")
    table = diff.locator("table")
    expect(table).to_be_hidden()  # folded until asked for, like the artefact itself
    summary.click()
    expect(table).to_be_visible()
    paths = table.locator("tbody td.fs-mono")
    expect(paths).to_have_text(
        [".price.amount", ".services[1]", ".eta_days", ".warnings", ".address_id"]
    )
    # The link goes to the step that wrote the previous version.
    summary.locator('a[href="#step-1"]').click()
    expect(page.locator("#step-1")).to_be_in_viewport()
    page.locator(f"#artefact-diff-{v2}").scroll_into_view_if_needed()
    screenshot(page, f"artefact-diff-{size[0]}x{size[1]}")
    assert csp_violations(page) == []
    assert page_log.problems() == []


def seeded_retried_order(server: LiveServer) -> tuple[int, list[int]]:
    """Seed the demo; return a retried order and its payment receipts' ids, oldest first."""
    from flowstate_web.app import db

    with server.app.app_context():
        seed(per_state=1, rng=random.Random(12))
        q = (
            select(artefacts.c.flow_id)
            .where(artefacts.c.name == "payment_receipt")
            .group_by(artefacts.c.flow_id)
            .having(func.count() >= 2)
            .order_by(artefacts.c.flow_id)
            .limit(1)
        )
        flow_id = int(db.session.execute(q).scalar_one())
        ids = [v.id for v in OrderFulfilmentFlow.get(flow_id).payment_receipt.versions()]
        db.session.remove()
    return flow_id, ids


@pytest.mark.parametrize("size", [(1440, 900), (1920, 1080)])
def test_seeded_demo_order_shows_its_receipt_diff(
    live_server: LiveServer, page: Page, page_log: PageLog, size: tuple[int, int]
) -> None:
    """A demo order declined, retried and authorised: the diff of its payment receipts."""
    flow_id, versions = seeded_retried_order(live_server)
    n = len(versions)
    page.set_viewport_size({"width": size[0], "height": size[1]})
    live_server.login(page, f"/types/OrderFulfilmentFlow/{flow_id}?live=0")
    diff = page.locator(f"#artefact-diff-{versions[-1]}")
    summary = diff.locator("summary")
    expect(summary).to_contain_text(
        f"changes in payment_receipt v{n} since v{n - 1} (step {3 * n - 4}, decline_payment)"
    )
    expect(summary).to_contain_text("+2 added")  # the authorisation, 3-D Secure
    expect(summary).to_contain_text("\u22122 removed")  # the decline code and its message
    table = diff.locator("table")
    expect(table).to_be_hidden()
    summary.click()
    expect(table).to_be_visible()
    status = table.locator("tr", has_text=".status")
    expect(status).to_contain_text('"declined"')
    expect(status).to_contain_text('"authorised"')
    expect(table.locator("tr", has_text=".decline_code")).to_contain_text("removed")
    # The diff table fits the window: nothing overflows the page sideways.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= size[0]
    box = table.bounding_box()
    assert box is not None and box["x"] + box["width"] <= size[0]
    diff.scroll_into_view_if_needed()
    screenshot(page, f"demo-receipt-diff-{size[0]}x{size[1]}")
    assert csp_violations(page) == []
    assert page_log.problems() == []


def test_type_page_lint_box(live_server: LiveServer, page: Page, page_log: PageLog) -> None:
    page.set_viewport_size({"width": 1440, "height": 900})
    live_server.login(page, "/types/ShippingQuoteFlow?live=0")
    box = page.locator("#fs-lint")
    expect(box.locator("summary")).to_have_text(
        "Graph lint: 0 errors, 1 warning in the declared graph of ShippingQuoteFlow"
    )
    expect(box.locator("li")).to_be_hidden()  # warnings only: folded
    box.locator("summary").click()
    expect(box.locator("li")).to_contain_text("FS103 error state without retry")
    expect(box.locator("li")).to_contain_text("error state 'expired' has no retry transition")
    screenshot(page, "type-lint-1440x900")
    # The demo flows are clean: no box.
    page.goto(live_server.admin("/types/SyncThirdPartyApiFlow?live=0"))
    expect(page.locator("h1")).to_contain_text("SyncThirdPartyApiFlow")
    expect(page.locator("#fs-lint")).to_have_count(0)
    assert page_log.problems() == []
