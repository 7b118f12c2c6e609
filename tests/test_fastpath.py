"""The transition fast path (``flowstate_web._fastpath``): public API only, same values, same
errors, and recovery from connections the server dropped."""

from __future__ import annotations

import ast
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from flowstate_web import _executor, _fastpath
from flowstate_web.errors import InvalidTransitionError, PayloadValidationError
from flowstate_web.models import artefacts, flows, metadata, transitions

from .conftest import PG_URL
from .flows import Order

SOURCE = Path(_fastpath.__file__)


def test_no_private_sqlalchemy_names() -> None:
    """No ``obj._name`` access (other than its own ``self._...``), no private module."""
    tree = ast.parse(SOURCE.read_text())
    private = [
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    modules = [
        f"line {node.lineno}: {node.module}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.level == 0
        and any(p.startswith("_") and not p.startswith("__") for p in node.module.split("."))
    ]
    assert private == []
    assert modules == []


def test_the_fast_path_is_taken_on_sqlite3_and_psycopg(engine: Engine) -> None:
    with Session(engine) as s:
        assert isinstance(_fastpath.on(s), _fastpath.DBAPI)


@contextmanager
def _listening(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def listen(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def test_a_statement_listener_sees_every_statement(engine: Engine) -> None:
    """Tracing and query recorders keep working: watched connections take ``Session.execute``."""
    with Session(engine) as s:
        flow = Order.create(customer="a", amount=1, session=s)
        with _listening(engine) as seen:
            assert isinstance(_fastpath.on(s), _fastpath.Core)
            Order.get(flow.id, session=s).pay({"n": 1})
    verbs = [" ".join(st.split()[:2]) for st in seen[-4:]]
    lock = (
        "SELECT flowstate_flows.id,"
        if engine.dialect.name == "postgresql"
        else "UPDATE flowstate_flows"
    )
    assert verbs == [
        lock,
        "INSERT INTO",
        "UPDATE flowstate_flows",
        "INSERT INTO",
    ]
    assert "flowstate_transitions" in seen[-3] and "flowstate_artefacts" in seen[-1]


def test_sql_logging_takes_the_logged_path(engine: Engine) -> None:
    log = logging.getLogger("sqlalchemy.engine")
    level = log.level
    log.setLevel(logging.INFO)
    try:
        with Session(engine) as s:
            assert isinstance(_fastpath.on(s), _fastpath.Core)
    finally:
        log.setLevel(level)
    with Session(engine) as s:
        assert isinstance(_fastpath.on(s), _fastpath.DBAPI)


FROZEN = datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=UTC)


def _scenario(engine: Engine) -> int:
    """Create an Order and run every kind of transition on it; return its id."""
    with Session(engine) as s:
        flow = Order.create(
            customer="Zoë", amount=3, tags=["x", "ÿ"], extra={"k": [1, None, 2.5]}, session=s
        )
        flow.run("pay", {"n": 1, "s": "é", "none": None}, actor="op", reason="r", meta={"m": 1})
        try:
            raise ValueError("boom")
        except ValueError:
            flow.fail()
        flow.retry_payment()
        flow.pay({})
        flow.ship("hi")
        flow.finish()
        return flow.id


def _stored(engine: Engine, flow_id: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored column as the database's text, ids left out."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table, key, skip in (
            (flows, "id", {"id"}),
            (transitions, "flow_id", {"id", "flow_id"}),
            (artefacts, "flow_id", {"id", "flow_id", "transition_id"}),
        ):
            cols = ", ".join(f"CAST({c.name} AS TEXT)" for c in table.c if c.name not in skip)
            sql = f"SELECT {cols} FROM {table.name} WHERE {key} = {int(flow_id)} ORDER BY id"
            out[table.name] = [tuple(r) for r in conn.exec_driver_sql(sql)]
    return out


def test_stored_values_are_identical_to_session_execute(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_executor, "now", lambda: FROZEN)
    fast = _scenario(engine)
    with _listening(engine) as seen:  # a listener: every statement through Session.execute
        core = _scenario(engine)
    assert len(seen) > 10
    fast_rows, core_rows = _stored(engine, fast), _stored(engine, core)
    assert fast_rows == core_rows
    assert len(fast_rows["flowstate_transitions"]) == 6
    assert len(fast_rows["flowstate_artefacts"]) == 3
    with Session(engine) as s:
        a, b = Order.get(fast, session=s), Order.get(core, session=s)
        with _listening(engine):
            c = Order.get(fast, session=s)
    loaded = [
        {k: v for k, v in vars(f).items() if k not in ("id", "_session", "_flowstate_row")}
        for f in (a, b, c)
    ]
    assert loaded[0] == loaded[1] == loaded[2]
    assert loaded[0]["_props"] == {
        "customer": "Zoë",
        "amount": 3,
        "express": False,
        "ratio": 0.0,
        "tags": ["x", "ÿ"],
        "extra": {"k": [1, None, 2.5]},
    }
    assert loaded[0]["completed_at"] == FROZEN


@pytest.mark.parametrize("path", ["fast", "core"])
def test_driver_errors_surface_as_sqlalchemy_exceptions(engine: Engine, path: str) -> None:
    with Session(engine) as s:
        flow = Order.create(customer="a", amount=1, session=s)
        # A history row the lock step cannot see coming: the (flow_id, seq) backstop fires.
        s.execute(
            transitions.insert().values(
                flow_id=flow.id,
                seq=1,
                name="x",
                from_state="new",
                to_state="new",
                created_at=FROZEN,
            )
        )
        s.commit()
        with (
            _listening(engine) if path == "core" else _nothing(),
            pytest.raises(InvalidTransitionError) as caught,
        ):
            flow.pay({"n": 1})
        assert isinstance(caught.value.__cause__, IntegrityError)
        assert caught.value.__cause__.connection_invalidated is False
        assert "flowstate_transitions" in str(caught.value.__cause__.statement)
        assert Order.get(flow.id, session=s).state == "new"  # rolled back, session usable


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _backends(admin: Engine, database: str) -> int:
    with admin.connect() as conn:
        return len(
            conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database}
            ).all()
        )


def _terminate(admin: Engine, database: str) -> int:
    """Kill every server process of ``database``: what its clients see of a server restart."""
    with admin.connect() as conn:
        return len(
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :d AND pid <> pg_backend_pid()"
                ),
                {"d": database},
            ).all()
        )


@pytest.mark.postgres
@pytest.mark.parametrize("path", ["fast", "core"])
def test_dropped_connections_mid_load_are_recovered(fresh_pg_url: str, path: str) -> None:
    """Kill the server side of every pooled connection while a worker runs get + transition.

    The worker keeps going without a restart: the transaction in flight fails with
    SQLAlchemy's ``OperationalError`` (connection invalidated), the pool's other, equally
    dead, connections are discarded with it, and the next transactions succeed.
    """
    engine = create_engine(fresh_pg_url, pool_size=4, max_overflow=0)
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    database = engine.url.database or ""
    metadata.create_all(engine)
    try:
        with Session(engine) as s:
            flow_id = Order.create(customer="a", amount=1, session=s).id
        held = [engine.connect() for _ in range(4)]  # four live connections in the pool
        for conn in held:
            conn.close()
        if path == "core":
            event.listen(engine, "before_cursor_execute", lambda *a: None)
        done: list[str] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set():
                try:
                    with Session(engine) as s:
                        flow = Order.get(flow_id, session=s)
                        if flow.state == "paid":
                            flow.touch()
                        else:
                            flow.pay({"n": len(done)})
                    done.append(flow.state)
                except DBAPIError as exc:
                    failures.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        try:
            _wait(lambda: len(done) >= 20)
            assert _terminate(admin, database) >= 1
            before = len(done)
            _wait(lambda: len(failures) >= 1 and len(done) >= before + 50)
        finally:
            stop.set()
            thread.join(30)
        assert 1 <= len(failures) <= 2, failures
        assert all(getattr(f, "connection_invalidated", False) for f in failures), failures
        # Nothing half-written: the history is 1..n without gaps and ends in the flow's state.
        with engine.connect() as conn:
            seqs = (
                conn.execute(
                    text("SELECT seq FROM flowstate_transitions WHERE flow_id = :f ORDER BY seq"),
                    {"f": flow_id},
                )
                .scalars()
                .all()
            )
            state, seq = conn.execute(
                text("SELECT state, seq FROM flowstate_flows WHERE id = :f"), {"f": flow_id}
            ).one()
        assert seqs == list(range(1, len(seqs) + 1))
        assert seq == len(seqs) and state == "paid"
        assert _backends(admin, database) <= 5  # the dead connections were not kept open
    finally:
        engine.dispose()
        admin.dispose()


def _wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_unbindable_values_raise_what_session_execute_raises(engine: Engine) -> None:
    """The storage boundary refuses what JSON cannot hold before either path binds it."""
    raised = []
    with Session(engine) as s:
        for path in ("fast", "core"):
            flow = Order.create(customer="a", amount=1, session=s)
            with (
                _listening(engine) if path == "core" else _nothing(),
                pytest.raises(Exception) as caught,  # noqa: PT011 - compared below
            ):
                flow.run("fail", meta={"not json": object()})
            raised.append(type(caught.value))
            assert Order.get(flow.id, session=s).state == "new"
    assert raised[0] is raised[1] is PayloadValidationError


def test_class_level_listeners_are_seen(engine: Engine) -> None:
    def listen(*_args: Any) -> None:
        pass

    event.listen(Engine, "after_cursor_execute", listen)
    try:
        with Session(engine) as s:
            assert isinstance(_fastpath.on(s), _fastpath.Core)
    finally:
        event.remove(Engine, "after_cursor_execute", listen)
    with Session(engine) as s:
        assert isinstance(_fastpath.on(s), _fastpath.DBAPI)


def test_one_round_trip_writes_a_transition_on_postgresql(engine: Engine) -> None:
    """PostgreSQL: history, flow and artefact in one statement; SQLite: three, as before."""
    with Session(engine) as s:
        flow = Order.create(customer="a", amount=1, session=s)
        Order.get(flow.id, session=s).pay({"n": 1})
        stored = s.execute(
            text(
                "SELECT t.seq, t.to_state, f.state, f.seq FROM flowstate_artefacts a"
                " JOIN flowstate_transitions t ON t.id = a.transition_id"
                " JOIN flowstate_flows f ON f.id = a.flow_id WHERE a.flow_id = :f"
            ),
            {"f": flow.id},
        ).all()
    assert [tuple(r) for r in stored] == [(1, "paid", "paid", 1)]
    combined = [sql for sql in _fastpath.compiled_sql(engine.dialect) if "flowstate_h AS" in sql]
    if engine.dialect.name == "postgresql":
        assert len(combined) == 1
        for part in ("INSERT INTO flowstate_transitions", "UPDATE flowstate_flows"):
            assert part in combined[0]
        assert "INSERT INTO flowstate_artefacts" in combined[0]
    else:
        assert combined == []


def test_a_row_changed_between_get_and_transition_is_read_again(engine: Engine) -> None:
    """The locked re-read after ``get`` reuses the row only if every column is unchanged."""
    with Session(engine) as s, Session(engine) as other:
        flow_id = Order.create(customer="a", amount=1, session=s).id
        flow = Order.get(flow_id, session=s)  # unlocked: s's transaction holds no lock
        o = Order.get(flow_id, session=other)
        o.customer = "b"
        o.pay({"n": 2})  # committed by the other session meanwhile
        with pytest.raises(InvalidTransitionError):
            flow.pay({"n": 3})  # the locked re-read sees it: already paid
        assert (flow.state, flow.customer, flow.seq) == ("paid", "b", 1)
        unchanged = Order.get(flow_id, session=s)
        unchanged.ship()  # read unchanged: the row as read by get is used
        assert (unchanged.state, unchanged.customer, unchanged.seq) == ("shipped", "b", 2)
