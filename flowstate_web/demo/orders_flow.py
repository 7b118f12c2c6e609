"""A branching flow for the live demo: take payment, pick, ship (or wait for stock), deliver.

Every arrow that leaves a state automatically is taken by a job in
:mod:`flowstate_web.demo.tasks`, handed off durably (``enqueue=``); the two error states have
retry transitions an operator can run from the admin.

Both answers of the payment provider are kept as the ``payment_receipt`` artefact: a decline
(status, decline code, attempt) and, after a retry, the authorisation. An order declined
then retried carries several versions, and the admin's flow page shows what changed between
them.
"""

from __future__ import annotations

from typing import Any

from flowstate_web import Artefact, Flow, Prop, State, transition


class OrderFulfilmentFlow(Flow):
    """Authorise the payment, pick the goods, buy a shipping label, deliver the parcel."""

    order_ref = Prop(str)
    sku = Prop(str)
    quantity = Prop(int, default=1)
    amount_cents = Prop(int)

    pending = State(initial=True)
    payment_authorised = State()
    payment_declined = State(error=True)
    picking = State()
    backordered = State()
    shipped = State()
    label_failed = State(error=True)
    delivered = State(final=True)
    cancelled = State(final=True)

    payment_receipt = Artefact(dict[str, Any])
    shipping_label = Artefact(dict[str, Any])

    @transition(
        source=pending, target=payment_authorised, persists=payment_receipt, enqueue="pick_order"
    )
    def authorise_payment(self, receipt: dict[str, Any]) -> dict[str, Any]:
        """Keep the payment provider's receipt and hand picking to the queue."""
        return receipt

    @transition(source=pending, target=payment_declined, persists=payment_receipt)
    def decline_payment(self, response: dict[str, Any]) -> dict[str, Any]:
        """Keep the provider's decline as the receipt (call it from ``except``)."""
        return response

    @transition(source=payment_declined, target=pending, retry=True, enqueue="authorise_payment")
    def retry_payment(self) -> None:
        """Operator's retry: ask the payment provider again."""

    @transition(source=payment_authorised, target=picking)
    def start_picking(self) -> None:
        """Send the order to the warehouse floor."""

    @transition(source=picking, target=backordered, enqueue="restock_order")
    def mark_backordered(self) -> None:
        """The shelf was empty: wait for stock."""

    @transition(source=backordered, target=picking, enqueue="ship_order")
    def restock(self) -> None:
        """Stock arrived: carry on picking and ship."""

    @transition(source=picking, target=shipped, persists=shipping_label, enqueue="deliver_order")
    def ship(self, label: dict[str, Any]) -> dict[str, Any]:
        """Keep the carrier's shipping label and hand the parcel over."""
        return label

    @transition(source=picking, target=label_failed)
    def fail_label(self) -> None:
        """Record that the carrier refused a label (call it from ``except``)."""

    @transition(source=label_failed, target=picking, retry=True, enqueue="ship_order")
    def retry_label(self) -> None:
        """Operator's retry: ask the carrier for a label again."""

    @transition(source=shipped, target=delivered)
    def deliver(self) -> None:
        """The carrier reports the parcel delivered."""

    @transition(source=[payment_declined, backordered], target=cancelled)
    def cancel(self) -> None:
        """Give up on the order (a declined payment or stock that never came)."""


def payment_attempt(flow: OrderFulfilmentFlow) -> int:
    """Return the number of the next payment attempt of ``flow`` (1 + its declines so far)."""
    return 1 + sum(1 for h in flow.history() if h.name == "decline_payment")
