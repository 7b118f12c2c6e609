"""The transaction rule and after-commit callbacks.

A flow operation joins the transaction you began and commits nothing; otherwise it is its
own transaction. Callbacks run once, after the outermost commit, never after a rollback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from flowstate_web import CallbackError
from flowstate_web.models import flows
from tests import flows as test_flows
from tests.flows import Disposable, Order


@pytest.fixture(autouse=True)
def _clear_calls() -> Iterator[None]:
    test_flows.calls.clear()
    yield
    test_flows.calls.clear()


def visible_state_elsewhere(db: SQLAlchemy, flow_id: int) -> str | None:
    """Read the flow's state on another connection (what a job worker would see)."""
    engine = create_engine(db.engine.url)
    try:
        with Session(engine) as other:
            return other.scalar(select(flows.c.state).where(flows.c.id == flow_id))
    finally:
        engine.dispose()


def test_callback_runs_after_commit_and_sees_committed_state(app: Any, db: SQLAlchemy) -> None:
    seen: list[str | None] = []
    flow = Order.create(customer="c", amount=1)
    original = Order.record_paid

    def record(self: Order) -> None:
        seen.append(visible_state_elsewhere(db, self.id))
        original(self)

    Order.record_paid = record  # type: ignore[method-assign]
    try:
        flow.pay({})
    finally:
        Order.record_paid = original  # type: ignore[method-assign]
    assert seen == ["paid"]  # another connection already sees the new state
    assert test_flows.calls == [("paid", flow.id)]


def test_inside_caller_transaction_waits_for_outer_commit(app: Any, db: SQLAlchemy) -> None:
    flow = Order.create(customer="c", amount=1)
    db.session.commit()
    with db.session.begin():
        flow.pay({})
        assert test_flows.calls == []
        assert (
            visible_state_elsewhere(db, flow.id) == "new"
            if db.engine.dialect.name == "postgresql"
            else True
        )
    assert test_flows.calls == [("paid", flow.id)]
    assert visible_state_elsewhere(db, flow.id) == "paid"


def test_outer_rollback_drops_callbacks_and_writes(app: Any, db: SQLAlchemy) -> None:
    flow = Order.create(customer="c", amount=1)
    db.session.commit()
    db.session.begin()
    flow.pay({})
    db.session.rollback()
    assert test_flows.calls == []
    assert Order.get(flow.id).state == "new"


# PostgreSQL only: pysqlite's legacy transaction mode does not run SAVEPOINTs reliably.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_savepoint_rollback_drops_only_its_callbacks(make_app: Any) -> None:
    app = make_app()
    with app.app_context():
        db = app.extensions["sqlalchemy"]
        a = Order.create(customer="a", amount=1)
        b = Order.create(customer="b", amount=1)
        db.session.commit()
        with db.session.begin():
            a.pay({})
            nested = db.session.begin_nested()
            b.pay({})
            nested.rollback()
            c_nested = db.session.begin_nested()
            c = Order.get(a.id)
            c.ship()
            c_nested.commit()
        assert test_flows.calls == [("paid", a.id)]
        assert Order.get(b.id).state == "new"
        assert Order.get(a.id).state == "shipped"


def test_callback_failure_is_reported_but_transition_committed(app: Any) -> None:
    flow = Order.create(customer="c", amount=1)
    original = Order.record_paid

    def boom(self: Order) -> None:
        raise RuntimeError("queue down")

    Order.record_paid = boom  # type: ignore[method-assign]
    try:
        with pytest.raises(CallbackError, match="queue down") as info:
            flow.pay({})
    finally:
        Order.record_paid = original  # type: ignore[method-assign]
    assert "the transition committed" in str(info.value)
    assert Order.get(flow.id).state == "paid"


def test_callbacks_never_run_when_the_transition_fails(app: Any) -> None:
    flow = Order.create(customer="c", amount=1)
    with pytest.raises(Exception, match="must be dict"):
        flow.pay([])  # type: ignore[arg-type]
    assert test_flows.calls == []


def test_failure_in_own_transaction_rolls_back_and_unlocks(app: Any, db: SQLAlchemy) -> None:
    flow = Order.create(customer="c", amount=1)
    with pytest.raises(Exception, match="must be dict"):
        flow.pay("x")  # type: ignore[arg-type]
    assert not db.session().in_transaction()
    # Another connection can take the lock at once: nothing was left holding it.
    engine = create_engine(db.engine.url, connect_args=_no_wait(db))
    try:
        with Session(engine) as other, other.begin():
            stmt = select(flows.c.state).where(flows.c.id == flow.id)
            if db.engine.dialect.name == "postgresql":
                stmt = stmt.with_for_update(nowait=True)
            else:
                other.execute(text("UPDATE flowstate_flows SET seq = seq"))
            assert other.scalar(stmt) == "new"
    finally:
        engine.dispose()


def _no_wait(db: SQLAlchemy) -> dict[str, Any]:
    return {"timeout": 0} if db.engine.dialect.name == "sqlite" else {}


def test_destroy_on_complete_deletes_but_still_calls_back(app: Any, db: SQLAlchemy) -> None:
    flow = Disposable.create()
    flow.close()
    assert test_flows.calls == [("closed", flow.id)]
    assert db.session.scalar(select(flows.c.id).where(flows.c.id == flow.id)) is None


def test_plain_session_without_flask(db_url: str) -> None:
    """The engine works with any SQLAlchemy Session, no app context needed."""
    engine = create_engine(db_url)
    from flowstate_web.models import metadata

    metadata.create_all(engine)
    try:
        with Session(engine) as s:
            flow = Order.create(session=s, customer="c", amount=1)
            flow.pay({})
            assert Order.get(flow.id, session=s).state == "paid"
            assert threading.current_thread() is threading.main_thread()
        assert test_flows.calls == [("paid", flow.id)]
    finally:
        metadata.drop_all(engine)
        engine.dispose()
