"""A branching flow for the live demo: take payment, pick, ship (or wait for stock), deliver.

Every arrow that leaves a state automatically is taken by a job in
:mod:`flowstate_web.demo.tasks`, handed off durably (``enqueue=``); the two error states have
retry transitions an operator can run from the admin. Each call to the payment provider or
the carrier happens in an "in progress" state its job claims first (``start_payment``,
``start_label``), so a second delivery of the same hand-off is refused there instead of
calling the provider again; a call that never comes back is failed by the state's timeout.

Both answers of the payment provider are kept as the ``payment_receipt`` artefact: a decline
(status, decline code, attempt) and, after a retry, the authorisation. An order declined
then retried carries several versions, and the admin's flow page shows what changed between
them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flowstate_web import Artefact, Flow, Prop, State, transition


class OrderFulfilmentFlow(Flow):
    """Authorise the payment, pick the goods, buy a shipping label, deliver the parcel."""

    order_ref = Prop(str)
    sku = Prop(str)
    quantity = Prop(int, default=1)
    amount_cents = Prop(int)

    pending = State(initial=True)
    authorising_payment = State(timeout=timedelta(minutes=2), on_timeout="decline_payment")
    payment_authorised = State()
    payment_declined = State(error=True)
    picking = State()
    buying_label = State(timeout=timedelta(minutes=2), on_timeout="fail_label")
    backordered = State()
    shipped = State()
    label_failed = State(error=True)
    delivered = State(final=True)
    cancelled = State(final=True)

    payment_receipt = Artefact(dict[str, Any])
    shipping_label = Artefact(dict[str, Any])

    @transition(source=pending, target=authorising_payment)
    def start_payment(self) -> None:
        """Claim the payment: mark the call to the provider as in progress."""

    @transition(
        source=authorising_payment,
        target=payment_authorised,
        persists=payment_receipt,
        enqueue="pick_order",
    )
    def authorise_payment(self, receipt: dict[str, Any]) -> dict[str, Any]:
        """Keep the payment provider's receipt and hand picking to the queue."""
        return receipt

    @transition(source=authorising_payment, target=payment_declined, persists=payment_receipt)
    def decline_payment(self, response: dict[str, Any] | None = None) -> dict[str, Any]:
        """Keep the provider's decline as the receipt (call it from ``except``).

        Without one (the state's timeout: the call never came back) the receipt says so.
        """
        if response is None:
            return no_answer(self, payment_attempt(self), "no answer before the timeout")
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

    @transition(source=picking, target=buying_label)
    def start_label(self) -> None:
        """Claim the label: mark the call to the carrier as in progress."""

    @transition(
        source=buying_label, target=shipped, persists=shipping_label, enqueue="deliver_order"
    )
    def ship(self, label: dict[str, Any]) -> dict[str, Any]:
        """Keep the carrier's shipping label and hand the parcel over."""
        return label

    @transition(source=buying_label, target=label_failed)
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


def no_answer(flow: OrderFulfilmentFlow, attempt: int, error: str) -> dict[str, Any]:
    """Return the receipt of payment attempt ``attempt`` that got no answer (``error``)."""
    return {
        "order_ref": flow.order_ref,
        "status": "no_answer",
        "attempt": attempt,
        "amount_cents": flow.amount_cents,
        "error": error[:200],
    }
