"""``Flow.get``: by primary key, ``lock=True`` for jobs, and what loading the engine imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from flowstate_web.errors import FlowNotFoundError
from flowstate_web.models import metadata

from .flows import Disposable, Order


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def listen(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()[:2]))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def test_get_is_a_primary_key_lookup_and_checks_the_type(engine: Engine) -> None:
    with Session(engine) as s:
        other = Disposable.create(session=s)
        with (
            statements(engine) as seen,
            pytest.raises(FlowNotFoundError, match=rf"tests\.Order #{other.id} "),
        ):
            Order.get(other.id, session=s)
        assert len(seen) == 1
        assert Disposable.get(other.id, session=s).id == other.id


def test_get_then_transition_reads_the_row_twice(engine: Engine) -> None:
    with Session(engine) as s:
        flow_id = Order.create(customer="a", amount=1, session=s).id
        with statements(engine) as seen:
            Order.get(flow_id, session=s).fail()
    assert len(seen) == 4  # get, lock + re-read, history, update


def test_get_locked_then_transition_reads_it_once(engine: Engine) -> None:
    with Session(engine) as s:
        flow_id = Order.create(customer="a", amount=1, session=s).id
        with statements(engine) as seen:
            flow = Order.get(flow_id, session=s, lock=True)
            assert flow.state == "new"
            flow.pay({"n": 1})  # commits: the lock is released
            flow.ship()  # a second transition locks and re-reads as usual
        assert s.get_transaction() is None
    lock = (
        "SELECT flowstate_flows.id,"
        if engine.dialect.name == "postgresql"
        else "UPDATE flowstate_flows"
    )
    assert seen == [
        lock,  # get(lock=True)
        "INSERT INTO",
        "UPDATE flowstate_flows",
        "INSERT INTO",  # the receipt
        lock,
        "INSERT INTO",
        "UPDATE flowstate_flows",
        "INSERT INTO",  # the note
    ]
    with Session(engine) as s:
        assert Order.get(flow_id, session=s).state == "shipped"
        assert [h.seq for h in Order.get(flow_id, session=s).history()] == [1, 2]


def test_get_locked_is_re_read_in_another_transaction_or_savepoint(engine: Engine) -> None:
    with Session(engine) as s:
        flow_id = Order.create(customer="a", amount=1, session=s).id
        flow = Order.get(flow_id, session=s, lock=True)
        s.rollback()  # the lock is gone with its transaction
        with Session(engine) as other:
            Order.get(flow_id, session=other).pay({"n": 1})
        with statements(engine) as seen:
            flow.ship()  # fresh read: paid now, so ship is allowed
        assert flow.state == "shipped" and len(seen) == 4
        with s.begin():
            flow = Order.get(flow_id, session=s, lock=True)
            with statements(engine) as seen, s.begin_nested():
                flow.finish()  # inside a savepoint begun after get: locks again
            seen = [st for st in seen if "SAVEPOINT" not in st]
            assert seen[0].startswith(("SELECT", "UPDATE flowstate_flows"))
            assert len(seen) == 3


@pytest.mark.postgres
def test_get_locked_holds_the_row_lock(fresh_pg_url: str) -> None:
    """Row locks are PostgreSQL's (SQLite's write lock is the whole database's)."""
    engine = create_engine(fresh_pg_url)
    metadata.create_all(engine)
    with Session(engine) as s, Session(engine) as other:
        flow_id = Order.create(customer="a", amount=1, session=s).id
        Order.get(flow_id, session=s, lock=True)
        with pytest.raises(OperationalError, match="could not obtain lock"):
            other.execute(
                text("SELECT id FROM flowstate_flows WHERE id = :i FOR UPDATE NOWAIT"),
                {"i": flow_id},
            )
        other.rollback()
        # A second job blocks in get(lock=True) until the first commits, then sees its work.
        states: list[str] = []

        def second() -> None:
            with Session(engine) as s2:
                f = Order.get(flow_id, session=s2, lock=True)
                states.append(f.state)
                f.ship()

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and states == []  # waiting on the lock
        flow = Order.get(flow_id, session=s, lock=True)
        flow.pay({"n": 1})  # commits, releasing the lock
        thread.join(30)
        assert states == ["paid"]
        assert Order.get(flow_id, session=s).state == "shipped"
    engine.dispose()


def test_admin_is_not_imported_when_disabled(tmp_path: Any) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from flask import Flask
        from flask_sqlalchemy import SQLAlchemy
        from flowstate_web import FlowState
        app = Flask("t")
        app.config.update(SQLALCHEMY_DATABASE_URI="sqlite:///{tmp_path}/a.db",
                          FLOWSTATE_ADMIN=False)
        FlowState(app, db=SQLAlchemy(app))
        print(sorted(m for m in sys.modules if m.startswith("flowstate_web.admin")))
        app.config["FLOWSTATE_ADMIN"] = True
        app2 = Flask("t2")
        app2.config.update(SQLALCHEMY_DATABASE_URI="sqlite:///{tmp_path}/b.db")
        FlowState(app2, db=SQLAlchemy(app2))
        print("flowstate_web.admin" in sys.modules, "flowstate" in app2.blueprints)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out == ["[]", "True True"]


def test_a_refused_transition_lets_go_of_the_lock_get_took(engine: Engine) -> None:
    """A reason the engine cannot store is refused inside the transaction, which rolls back:
    the lock ``get(lock=True)`` took is released at once (on SQLite, the database's)."""
    from flowstate_web.errors import PayloadValidationError

    with Session(engine) as s, Session(engine) as other:
        flow_id = Order.create(customer="a", amount=1, session=s).id
        flow = Order.get(flow_id, session=s, lock=True)
        with pytest.raises(PayloadValidationError, match="reason"):
            flow.run("pay", {"n": 1}, reason="x" * 5000)
        assert s.get_transaction() is None  # rolled back: nothing holds the lock
        Order.get(flow_id, session=other).pay({"n": 2})  # would wait, then fail, if held
        assert Order.get(flow_id, session=s).state == "paid"


@pytest.mark.postgres
def test_an_integrity_error_other_than_the_seq_is_not_called_concurrent(fresh_pg_url: str) -> None:
    """Only the history's unique (flow_id, seq) means "another transition got there first"."""
    from sqlalchemy.exc import IntegrityError

    from flowstate_web.errors import ConcurrentTransitionError

    engine = create_engine(fresh_pg_url)
    metadata.create_all(engine)
    with Session(engine) as s:
        flow_id = Order.create(customer="a", amount=1, session=s).id
        with s.begin():
            flow = Order.get(flow_id, session=s, lock=True)
            s.execute(text("DELETE FROM flowstate_flows WHERE id = :i"), {"i": flow_id})
            with pytest.raises(IntegrityError) as info:
                flow.pay({"n": 1})  # the history row's foreign key: the flow is gone
            assert not isinstance(info.value, ConcurrentTransitionError)
            assert "flowstate_flows" in str(info.value.orig)
    engine.dispose()
