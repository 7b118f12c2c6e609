"""Timestamps, completion, pruning, and rows the code no longer knows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import func, select, update

from flowstate_web import prune_completed
from flowstate_web._executor import now
from flowstate_web.models import artefacts, flows, transitions
from flowstate_web.registry import row_problem
from tests.flows import Order


def finished(n: int) -> list[int]:
    ids = []
    for i in range(n):
        f = Order.create(customer=str(i), amount=1)
        f.pay({"i": i})
        f.ship()
        f.finish()
        ids.append(f.id)
    return ids


def test_timestamps_move_with_transitions(app: Any) -> None:
    flow = Order.create(customer="c", amount=1)
    assert flow.created_at == flow.updated_at == flow.state_entered_at
    assert flow.completed_at is None and flow.last_errored_at is None
    flow.pay({})
    fresh = Order.get(flow.id)
    assert fresh.updated_at > fresh.created_at
    assert fresh.state_entered_at == fresh.updated_at
    assert fresh.created_at.tzinfo is not None


def test_prune_removes_only_old_completed_flows_in_batches(app: Any, db: SQLAlchemy) -> None:
    old = finished(5)
    recent = finished(1)
    open_flow = Order.create(customer="open", amount=1)
    db.session.execute(
        update(flows).where(flows.c.id.in_(old)).values(completed_at=now() - timedelta(days=40))
    )
    db.session.commit()
    deleted = prune_completed(now() - timedelta(days=30), batch_size=2)
    assert deleted == 5
    left = set(db.session.scalars(select(flows.c.id)))
    assert left == {*recent, open_flow.id}
    orphans = db.session.scalar(
        select(func.count()).select_from(transitions).where(transitions.c.flow_id.in_(old))
    )
    assert orphans == 0
    assert (
        db.session.scalar(
            select(func.count()).select_from(artefacts).where(artefacts.c.flow_id.in_(old))
        )
        == 0
    )


def test_prune_cli(app: Any, db: SQLAlchemy) -> None:
    finished(2)
    db.session.execute(update(flows).values(completed_at=now() - timedelta(days=3)))
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["flowstate", "prune", "--days", "1"])
    assert result.exit_code == 0, result.output
    assert "pruned 2 completed flow(s)" in result.output


def test_rows_the_code_no_longer_knows_are_reported_not_fatal(app: Any, db: SQLAlchemy) -> None:
    flow = Order.create(customer="c", amount=1)
    db.session.execute(update(flows).where(flows.c.id == flow.id).values(state="retired"))
    db.session.commit()
    loaded = Order.get(flow.id)
    assert not loaded.state_declared and not loaded.errored
    assert loaded.available_transitions() == ()
    assert row_problem("tests.Order", "retired") == "state 'retired' is not declared on tests.Order"
    assert row_problem("gone.Type", "x") == "flow type 'gone.Type' is not defined in this process"
    assert row_problem("tests.Order", "new") is None
