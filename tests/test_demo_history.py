"""The demo's past traffic: history spread over the last hours, rolled up for the heat map."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from flowstate_web import rollup
from flowstate_web.app import create_app, db
from flowstate_web.demo.orders_flow import OrderFulfilmentFlow
from flowstate_web.demo.seed import seed
from flowstate_web.models import flows, outbox, transitions


@pytest.fixture
def demo_app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        {
            "TESTING": True,
            "FLOWSTATE_INSTANCE_PATH": str(tmp_path / "instance"),
            "FLOWSTATE_PUBLIC": True,
            "FLOWSTATE_FLOW_MODULES": [
                "flowstate_web.demo.sync_flow",
                "flowstate_web.demo.orders_flow",
            ],
        }
    )
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_seeded_history_spreads_over_hours_and_is_rolled_up(demo_app: Flask) -> None:
    with demo_app.app_context():
        seed(per_state=1, rng=random.Random(4))
        now = datetime.now(UTC)
        oldest, newest = db.session.execute(
            select(func.min(transitions.c.created_at), func.max(transitions.c.created_at))
        ).one()
        assert now - rollup.as_utc(oldest) > timedelta(hours=1)
        assert now - rollup.as_utc(newest) < timedelta(hours=6)
        # Everything is rolled up already, and the 24 h window shows failures.
        assert rollup.run() == 0
        day = rollup.window(db.session(), OrderFulfilmentFlow.type_name, "24h")
        graph = OrderFulfilmentFlow.graph()
        assert sum(e.n for e in day.edges if e.to_state in graph.error_states) > 0
        assert day.p("picking", 0.5) is not None
        # Flows still in progress entered their state moments ago: no timeout fires.
        open_ = db.session.execute(
            select(func.min(flows.c.state_entered_at)).where(
                flows.c.type == OrderFulfilmentFlow.type_name,
                flows.c.errored.is_(False),
                flows.c.completed_at.is_(None),
                flows.c.state.notin_(graph.final_states),
            )
        ).scalar_one()
        assert now - rollup.as_utc(open_) < timedelta(minutes=1)
        # A delivered order was completed when it entered its final state, not at seeding.
        moved = db.session.execute(
            select(func.count())
            .select_from(flows)
            .where(
                flows.c.completed_at.is_not(None),
                flows.c.completed_at != flows.c.state_entered_at,
            )
        ).scalar_one()
        assert moved == 0
        # Past traffic is history, not work: no hand-off waits to be sent.
        assert db.session.execute(select(func.count()).select_from(outbox)).scalar() == 0
