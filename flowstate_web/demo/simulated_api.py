"""Stand-ins for the third parties the demo flows call: slow sometimes, failing sometimes.

``FLOWSTATE_DEMO_FAILURE_RATE`` (0..1, default 0.3) is the chance that one call raises
:class:`ApiError` (the payment provider declines instead: :class:`PaymentDeclined`, with
its answer); ``FLOWSTATE_DEMO_LATENCY`` (seconds, default 0.4) bounds a random delay;
``FLOWSTATE_DEMO_BACKORDER_RATE`` (default 0.15) is the chance a picked item is out of stock.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_FAILURE_RATE = 0.3
DEFAULT_LATENCY = 0.4
DEFAULT_BACKORDER_RATE = 0.15

_CARRIERS = ("Parcelwise", "Northwind Freight", "Hermes Local")
_FAILURES = (
    "503 Service Unavailable from {api}",
    "timed out after 5s waiting for {api}",
    "429 Too Many Requests from {api}: retry later",
    "connection reset by peer while calling {api}",
)
_DECLINES = (
    ("insufficient_funds", "Insufficient funds on the card"),
    ("do_not_honour", "The issuer declined without a reason (do not honour)"),
    ("issuer_unavailable", "The card issuer did not answer in time"),
    ("suspected_fraud", "Declined by the issuer's fraud screening"),
)
_CARDS = (("visa", "4242"), ("mastercard", "4444"), ("amex", "0005"))


class ApiError(Exception):
    """A simulated third-party failure."""


class PaymentDeclined(ApiError):
    """The payment provider declined; ``response`` is its answer (kept as the receipt)."""

    def __init__(self, message: str, response: dict[str, Any]) -> None:
        super().__init__(message)
        self.response = response


@dataclass
class SimulatedApi:
    """A fake third party with configurable failure rate, latency and stock levels."""

    failure_rate: float = DEFAULT_FAILURE_RATE
    latency: float = DEFAULT_LATENCY
    backorder_rate: float = DEFAULT_BACKORDER_RATE
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SimulatedApi:
        """Build one from the ``FLOWSTATE_DEMO_*`` keys of a Flask config."""
        return cls(
            failure_rate=_rate(config.get("FLOWSTATE_DEMO_FAILURE_RATE", DEFAULT_FAILURE_RATE)),
            latency=max(0.0, float(config.get("FLOWSTATE_DEMO_LATENCY", DEFAULT_LATENCY))),
            backorder_rate=_rate(
                config.get("FLOWSTATE_DEMO_BACKORDER_RATE", DEFAULT_BACKORDER_RATE)
            ),
        )

    def _wait(self) -> None:
        if self.latency:
            time.sleep(self.rng.uniform(0, self.latency))  # the remote end being slow

    def _call(self, api: str) -> None:
        self._wait()
        if self.rng.random() < self.failure_rate:
            raise ApiError(self.rng.choice(_FAILURES).format(api=api))

    def fetch_record(self, third_party_id: str) -> dict[str, Any]:
        """Return the third party's record ``third_party_id``."""
        self._call("api.example-crm.test")
        return {
            "id": third_party_id,
            "name": self.rng.choice(("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger D.")),
            "plan": self.rng.choice(("free", "team", "enterprise")),
            "seats": self.rng.randint(1, 250),
            "etag": uuid.uuid4().hex[:12],
        }

    def save_record(self, my_record_id: str, data: Mapping[str, Any]) -> None:
        """Write the fetched record into "our" database (it can fail too: a lock timeout)."""
        self._call("the local records database")

    def authorise_payment(
        self, order_ref: str, amount_cents: int, attempt: int = 1
    ) -> dict[str, Any]:
        """Return a payment receipt for ``amount_cents`` (status ``"authorised"``).

        :raises PaymentDeclined: at the failure rate; its ``response`` is the provider's
            answer (status ``"declined"``, ``decline_code``, ``message``, ``attempt``).
        """
        self._wait()
        brand, last4 = _CARDS[sum(map(ord, order_ref)) % len(_CARDS)]  # the order's own card
        declined = self.rng.random() < self.failure_rate
        answer: dict[str, Any] = {
            "order_ref": order_ref,
            "status": "declined" if declined else "authorised",
            "attempt": attempt,
            "amount_cents": amount_cents,
            "currency": "EUR",
            "psp_reference": f"PSP-{uuid.uuid4().hex[:12].upper()}",
            "card": {"brand": brand, "last4": last4},
            "risk": {"score": self.rng.randint(2, 95), "checks": ["cvc", "avs"]},
        }
        if declined:
            code, message = self.rng.choice(_DECLINES)
            answer.update(decline_code=code, message=message)
            raise PaymentDeclined(
                f"payments.example-psp.test declined {order_ref} (attempt {attempt}): {code}",
                answer,
            )
        if attempt > 1:  # after a decline, the card is checked through 3-D Secure too
            answer["risk"]["checks"].append("3ds")
        answer["authorisation"] = f"AUTH-{uuid.uuid4().hex[:10].upper()}"
        return answer

    def in_stock(self, sku: str, quantity: int) -> bool:
        """Return whether the warehouse has ``quantity`` of ``sku`` on the shelf."""
        return self.rng.random() >= self.backorder_rate

    def create_shipping_label(self, order_ref: str, sku: str, quantity: int) -> dict[str, Any]:
        """Return a carrier's shipping label for the parcel."""
        carrier = self.rng.choice(_CARRIERS)
        self._call(f"the {carrier} labels API")
        return {
            "order_ref": order_ref,
            "carrier": carrier,
            "tracking_number": f"{carrier[:2].upper()}{self.rng.randint(10**9, 10**10 - 1)}",
            "parcels": [{"sku": sku, "quantity": quantity}],
            "service": self.rng.choice(("standard", "express")),
        }


def _rate(value: Any) -> float:
    return min(1.0, max(0.0, float(value)))
