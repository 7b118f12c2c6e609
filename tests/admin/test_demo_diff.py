"""The seeded demo has orders whose payment receipt was written twice; the flow page diffs them.

Both databases: the demo seeder runs on a host app with the admin mounted (``make_admin``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from flask import Flask
from sqlalchemy import func, select

from flowstate_web.demo.orders_flow import OrderFulfilmentFlow
from flowstate_web.demo.seed import RETRIED_ORDERS, seed
from flowstate_web.models import artefacts

from .conftest import ADMIN


def retried_orders(app: Flask) -> dict[int, int]:
    """Return ``{flow id: versions}`` of the orders with two or more payment receipts."""
    q = (
        select(artefacts.c.flow_id, func.count())
        .where(artefacts.c.name == "payment_receipt")
        .group_by(artefacts.c.flow_id)
        .having(func.count() >= 2)
    )
    return {int(f): int(n) for f, n in app.extensions["sqlalchemy"].session.execute(q).all()}


def test_seeded_orders_declined_then_retried_show_the_receipt_diff(
    make_admin: Callable[..., Flask],
) -> None:
    app = make_admin()
    with app.app_context():
        seed(per_state=1, rng=random.Random(10))
        found = retried_orders(app)
        assert len(found) == RETRIED_ORDERS, found  # per_state=1
        flow_id = min(found)
        flow = OrderFulfilmentFlow.get(flow_id)
        versions = flow.payment_receipt.versions()
        assert len(versions) == found[flow_id]
        statuses = [v.payload["status"] for v in versions]
        assert statuses == ["declined"] * (len(versions) - 1) + ["authorised"]
        assert [v.payload["attempt"] for v in versions] == list(range(1, len(versions) + 1))
        names = [h.name for h in flow.history()]
        assert names[:3] == ["start_payment", "decline_payment", "retry_payment"]
        assert "authorise_payment" in names
        last = versions[-1]

        html = app.test_client().get(f"{ADMIN}/types/OrderFulfilmentFlow/{flow_id}").text
    n = len(versions)
    box = html[html.index(f'id="artefact-diff-{last.id}"') :]
    box = box[: box.index("</details>")]
    assert f"changes in <code>payment_receipt</code> v{n} since v{n - 1}" in box
    assert "<code>decline_payment</code>" in box  # the step that wrote the previous version
    rows = {
        path: kind
        for kind, path in re.findall(
            r'<tr class="fs-diff-row-(\w+)">.*?<td class="fs-mono">([^<]+)</td>', box, re.S
        )
    }
    assert rows[".status"] == "changed"
    assert rows[".attempt"] == "changed"
    assert rows[".decline_code"] == "removed"
    assert rows[".message"] == "removed"
    assert rows[".authorisation"] == "added"
    assert rows[".risk.checks[2]"] == "added"  # 3-D Secure after a decline
    assert ".order_ref" not in rows and ".card.last4" not in rows  # unchanged: not listed
    assert "&#34;declined&#34;" in box and "&#34;authorised&#34;" in box
    # Every later version has its diff, the first none.
    assert f'id="artefact-diff-{versions[0].id}"' not in html
    assert all(f'id="artefact-diff-{v.id}"' in html for v in versions[1:])
