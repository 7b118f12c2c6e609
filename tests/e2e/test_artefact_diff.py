"""The flow page's artefact diff and the type page's lint box, in Chromium (1440 and 1920 wide)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from flowstate_web import Artefact, Flow, Prop, State, transition

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
