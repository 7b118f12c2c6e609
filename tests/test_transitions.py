"""Running transitions: source checks, guards, history, errors recorded, no half writes."""

from __future__ import annotations

from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import func, insert, select

from flowstate_web import (
    FlowNotFoundError,
    FlowStateError,
    GuardFailedError,
    InvalidTransitionError,
    PayloadValidationError,
)
from flowstate_web.models import artefacts, flows, transitions
from tests.flows import Order


def count(db: SQLAlchemy, table: Any) -> int:
    return int(db.session.scalar(select(func.count()).select_from(table)) or 0)


def new_order(**props: Any) -> Order:
    return Order.create(**({"customer": "c", "amount": 5} | props))


def test_happy_path_writes_history_in_order(app: Any) -> None:
    flow = new_order()
    assert (flow.state, flow.seq, flow.errored) == ("new", 0, False)
    entry = flow.pay({"total": 5})
    assert (entry.seq, entry.name, entry.from_state, entry.to_state) == (1, "pay", "new", "paid")
    flow.ship()
    flow.finish()
    fresh = Order.get(flow.id)
    assert fresh.state == "done" and fresh.seq == 3
    assert [(h.seq, h.name) for h in fresh.history()] == [(1, "pay"), (2, "ship"), (3, "finish")]
    assert fresh.completed_at is not None and fresh.is_final


def test_invalid_source_state_is_refused_and_names_everything(app: Any, db: SQLAlchemy) -> None:
    flow = new_order()
    with pytest.raises(InvalidTransitionError) as info:
        flow.ship()
    msg = str(info.value)
    for part in ("tests.Order", f"#{flow.id}", "'ship'", "'new'", "'paid'", "'shipped'"):
        assert part in msg
    assert count(db, transitions) == 0
    assert Order.get(flow.id).state == "new"


def test_stale_object_is_checked_against_the_fresh_row(app: Any) -> None:
    flow = new_order()
    stale = Order.get(flow.id)
    flow.pay({"total": 1})
    assert stale.state == "new"  # the in-memory copy is old ...
    with pytest.raises(InvalidTransitionError):
        stale.pay({"total": 2})  # ... but the check runs on the locked row
    assert stale.state == "paid"


def test_guard_runs_on_fresh_data_and_failure_writes_nothing(app: Any, db: SQLAlchemy) -> None:
    flow = new_order(amount=0)
    flow.pay({"total": 0})
    with pytest.raises(GuardFailedError, match=r"guard of 'ship' refused 'paid' -> 'shipped'"):
        flow.ship()
    assert count(db, transitions) == 1
    assert count(db, artefacts) == 1
    assert Order.get(flow.id).state == "paid"


def test_wrong_artefact_type_writes_nothing(app: Any, db: SQLAlchemy) -> None:
    flow = new_order()
    with pytest.raises(PayloadValidationError, match="artefact 'receipt' of 'pay' must be dict"):
        flow.pay("not a dict")  # type: ignore[arg-type]
    assert (count(db, transitions), count(db, artefacts)) == (0, 0)
    assert Order.get(flow.id).state == "new"


def test_unjsonable_artefact_writes_nothing(app: Any, db: SQLAlchemy) -> None:
    flow = new_order()
    with pytest.raises(PayloadValidationError, match="cannot be stored in JSON"):
        flow.pay({"when": object()})
    assert count(db, transitions) == 0


def test_body_returning_a_value_without_persists_is_an_error(app: Any) -> None:
    flow = new_order()
    flow.pay({})
    t = Order.transition_fields["touch"]
    original = t.fn
    t.fn = lambda self: 42
    try:
        with pytest.raises(PayloadValidationError, match="persists no artefact"):
            flow.touch()
    finally:
        t.fn = original


def test_error_state_records_the_exception_from_except_block(app: Any) -> None:
    flow = new_order()
    try:
        raise ConnectionError("api down <b>")
    except ConnectionError:
        entry = flow.fail()
    assert entry.error_type == "ConnectionError"
    assert entry.error_message == "api down <b>"
    assert entry.error_traceback is not None and "ConnectionError" in entry.error_traceback
    fresh = Order.get(flow.id)
    assert fresh.errored and fresh.last_error_message == "api down <b>"
    assert fresh.last_errored_at is not None


def test_explicit_error_actor_reason_meta_are_recorded(app: Any) -> None:
    flow = new_order()
    err = ValueError("x" * 5000)
    flow.run("fail", error=err, actor="worker-1", reason="timeout", meta={"try": 3})
    entry = flow.retry(actor="alice", reason="api is back")
    history = Order.get(flow.id).history()
    assert history[0].error_message is not None and len(history[0].error_message) == 2000
    assert (history[0].actor, history[0].reason, history[0].meta) == (
        "worker-1",
        "timeout",
        {"try": 3},
    )
    assert (entry.actor, entry.reason, entry.name) == ("alice", "api is back", "retry_payment")
    assert (history[1].actor, history[1].reason) == ("alice", "api is back")


def test_last_errored_at_survives_recovery(app: Any) -> None:
    flow = new_order()
    flow.fail()
    first = Order.get(flow.id).last_errored_at
    flow.retry()
    fresh = Order.get(flow.id)
    assert not fresh.errored and fresh.last_errored_at == first


def test_retry_refuses_non_retry_and_ambiguous(app: Any) -> None:
    flow = new_order()
    assert flow.retry_transitions() == ()
    with pytest.raises(FlowStateError, match="0 retry transitions"):
        flow.retry()
    with pytest.raises(FlowStateError, match="'pay' is not a retry transition"):
        flow.retry("pay")
    flow.fail()
    assert [t.name for t in flow.retry_transitions()] == ["retry_payment"]


def test_unknown_flow_and_wrong_type(app: Any, db: SQLAlchemy) -> None:
    with pytest.raises(FlowNotFoundError, match=r"tests\.Order #999 does not exist"):
        Order.get(999)
    from tests.flows import Disposable

    other = Disposable.create()
    with pytest.raises(FlowNotFoundError):
        Order.get(other.id)


def test_unique_seq_backs_the_lock(app: Any, db: SQLAlchemy) -> None:
    """Even a writer that bypasses the engine cannot add a second transition for one step."""
    flow = new_order()
    flow.pay({})
    row = {
        "flow_id": flow.id,
        "seq": 1,
        "name": "x",
        "from_state": "new",
        "to_state": "paid",
        "created_at": flow.created_at,
    }
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        db.session.execute(insert(transitions).values(**row))
    db.session.rollback()


def test_delete_removes_history_and_artefacts(app: Any, db: SQLAlchemy) -> None:
    flow = new_order()
    flow.pay({"a": 1})
    flow.delete()
    assert (count(db, flows), count(db, transitions), count(db, artefacts)) == (0, 0, 0)
