"""Error classes mean what their names say; implicit error capture follows one precise rule."""

from __future__ import annotations

from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import insert, update

import flowstate_web
from flowstate_web import (
    CallbackError,
    ConcurrentTransitionError,
    Flow,
    FlowNotFoundError,
    InvalidTransitionError,
    State,
    UnknownFlowTypeError,
    load,
    row_problem,
    transition,
)
from flowstate_web.models import flows, transitions
from tests.flows import Disposable, Order


class Noisy(Flow, type_name="tests.Noisy"):
    """Two after-commit callbacks that fail."""

    a = State(initial=True)
    b = State()

    @transition(source=a, target=b, after=["first", "second"])
    def go(self) -> None:
        pass

    def first(self) -> None:
        raise KeyError("first failure")

    def second(self) -> None:
        raise ValueError("second failure")


def new_order() -> Order:
    return Order.create(customer="c", amount=1)


def test_lost_seq_race_is_a_concurrent_transition_error(app: Any, db: SQLAlchemy) -> None:
    flow = new_order()
    # Another writer, bypassing the row lock, already wrote step 1 of this flow.
    db.session.execute(
        insert(transitions).values(
            flow_id=flow.id,
            seq=1,
            name="fail",
            from_state="new",
            to_state="failed",
            created_at=flow.created_at,
        )
    )
    db.session.commit()
    with pytest.raises(ConcurrentTransitionError) as info:
        flow.pay({})
    assert isinstance(info.value, InvalidTransitionError)
    msg = str(info.value)
    assert "another transition got there first" in msg
    assert f"tests.Order #{flow.id}" in msg and "'pay'" in msg and "step 1" in msg
    assert "allowed from" not in msg
    assert info.value.seq == 1 and info.value.transition == "pay"


def test_callback_error_chains_the_first_failure(app: Any) -> None:
    flow = Noisy.create()
    with pytest.raises(CallbackError) as info:
        flow.go()
    assert isinstance(info.value.__cause__, KeyError)
    assert [type(e).__name__ for _, e in info.value.failures] == ["KeyError", "ValueError"]


# -- implicit error capture ------------------------------------------------------------------


def fail_from_helper(flow: Order) -> None:
    flow.fail()


def test_exception_handled_in_the_calling_function_is_recorded(app: Any) -> None:
    flow = new_order()
    try:
        {}["missing"]
    except KeyError:
        entry = flow.run("fail")
    assert entry.error_type == "KeyError" and entry.error_message == "'missing'"


def test_exception_handled_further_up_is_not_recorded(app: Any) -> None:
    flow = new_order()
    try:
        raise ConnectionError("unrelated")
    except ConnectionError:
        fail_from_helper(flow)  # the helper's frame did not see the exception
    assert Order.get(flow.id).history()[0].error_type is None
    assert Order.get(flow.id).last_error_message is None


def test_error_none_suppresses_and_error_overrides(app: Any) -> None:
    first, second = new_order(), new_order()
    try:
        raise ConnectionError("not this one")
    except ConnectionError:
        none = first.run("fail", error=None)
        given = second.run("fail", error=TimeoutError("this one"))
    assert (none.error_type, none.error_message) == (None, None)
    assert (given.error_type, given.error_message) == ("TimeoutError", "this one")


def test_no_capture_into_a_normal_state(app: Any) -> None:
    flow = new_order()
    try:
        raise ConnectionError("x")
    except ConnectionError:
        entry = flow.pay({})
    assert entry.error_type is None


# -- loading without knowing the type --------------------------------------------------------


def test_load_returns_the_right_subclass(app: Any, db: SQLAlchemy) -> None:
    order, other = new_order(), Disposable.create()
    loaded = load(order.id)
    assert type(loaded) is Order and loaded.state == "new"
    assert type(flowstate_web.load(other.id)) is Disposable
    with pytest.raises(FlowNotFoundError, match="#999999 does not exist"):
        load(999_999)
    db.session.execute(update(flows).where(flows.c.id == order.id).values(type="gone.Type"))
    db.session.commit()
    with pytest.raises(UnknownFlowTypeError, match=r"#\d+ is of type 'gone\.Type'"):
        load(order.id)
    assert flowstate_web.row_problem is row_problem
    assert "row_problem" in flowstate_web.__all__ and "load" in flowstate_web.__all__


@pytest.mark.parametrize("flow_id", [2**63, 2**70, -(2**63) - 1])
def test_an_id_past_64_bits_is_not_found_and_the_session_stays_usable(
    app: Any, db: SQLAlchemy, flow_id: int
) -> None:
    order = new_order()
    with pytest.raises(FlowNotFoundError):
        load(flow_id)
    with pytest.raises(FlowNotFoundError, match=r"tests\.Order"):
        Order.get(flow_id)
    # No driver error, and on PostgreSQL no aborted transaction left behind.
    assert Order.get(order.id).state == "new"
