"""What can run now, and why not: guards evaluated on the instance, writing nothing."""

from __future__ import annotations

from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy

from flowstate_web import Flow, FlowStateError, Prop, State, transition
from tests.test_prop_updates import Ticket, snapshot


class Gate(Flow, type_name="tests.Gate"):
    """A guard that raises on some data."""

    code = Prop(str)

    closed = State(initial=True)
    open = State(final=True)

    @transition(source=closed, target=open, guard="code_is_valid")
    def unlock(self) -> None:
        pass

    @transition(source=[closed, open], target=open)
    def force(self) -> None:
        pass

    def code_is_valid(self) -> bool:
        return {"1234": True, "0000": False}[self.code]


class Nosy(Flow, type_name="tests.Nosy"):
    """A guard that (wrongly) assigns a prop while it is asked."""

    seen = Prop(int, default=0)

    new = State(initial=True)
    done = State(final=True)

    @transition(source=new, target=done, guard="counts_itself")
    def finish(self) -> None:
        pass

    def counts_itself(self) -> bool:
        self.seen = self.seen + 1
        return True


def names(specs: Any) -> list[str]:
    return [s.name for s in specs]


def test_available_transitions_evaluates_guards(app: Any, db: SQLAlchemy) -> None:
    flow = Ticket.create(title="a")
    flow.start()
    before = snapshot(db)
    assert names(flow.available_transitions()) == ["fail"]  # finish's guard fails
    assert names(flow.available_transitions(guards=False)) == ["finish", "fail"]
    flow.external_id = "tp-1"  # staged edits count
    assert names(flow.available_transitions()) == ["finish", "fail"]
    assert snapshot(db) == before  # evaluating wrote nothing


def test_why_not_gives_the_reason(app: Any, db: SQLAlchemy) -> None:
    flow = Ticket.create(title="a")
    assert flow.why_not("finish") == "state is 'new', needs 'working'"
    assert flow.why_not("start") is None
    flow.start()
    flow.fail()
    assert flow.why_not("start") == "state is 'failed', needs 'new'"
    assert flow.why_not("retry_work") is None
    for _ in range(2):
        flow.retry_work()
        flow.fail()
    assert flow.attempts == 3
    assert flow.why_not("retry_work") == "guard can_retry returned False"
    assert flow.retry_transitions()[0].name == "retry_work"  # declared, but blocked now
    with pytest.raises(FlowStateError, match="no transition 'nope'"):
        flow.why_not("nope")


def test_a_guard_that_raises_is_a_reason_not_a_crash(app: Any) -> None:
    bad = Gate.create(code="9999")
    assert bad.why_not("unlock") == "guard code_is_valid raised KeyError: '9999'"
    assert names(bad.available_transitions()) == ["force"]
    assert Gate.create(code="0000").why_not("unlock") == "guard code_is_valid returned False"
    good = Gate.create(code="1234")
    assert names(good.available_transitions()) == ["unlock", "force"]
    good.unlock()
    assert good.why_not("force") is None
    assert good.why_not("unlock") == "state is 'open', needs 'closed'"


def test_asking_never_stages_what_a_guard_assigns(app: Any) -> None:
    flow = Nosy.create()
    assert flow.why_not("finish") is None
    assert names(flow.available_transitions()) == ["finish"]
    assert dict(flow.staged) == {} and flow.seen == 0
    flow.finish()
    assert Nosy.get(flow.id).state == "done"
