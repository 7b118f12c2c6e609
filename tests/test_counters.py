"""The per-state counters: exact after every kind of write, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from flask import Flask
from flask.testing import FlaskCliRunner
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from flowstate_web import Flow, State, counters, prune_completed, transition
from flowstate_web._executor import now
from flowstate_web.admin import queries
from flowstate_web.counters import install_counters, uninstall_counters
from flowstate_web.models import flows, state_counts
from tests.flows import Disposable, Order

Key = tuple[str, str]


class Pendulum(Flow, type_name="tests.counters.Pendulum"):
    """Swings between two states, both ways (for the lock-order test)."""

    pending = State(initial=True)
    picked = State()

    @transition(source=pending, target=picked)
    def pick(self) -> None:
        pass

    @transition(source=picked, target=pending)
    def release(self) -> None:
        pass


def truth(session: Session) -> dict[Key, tuple[int, int]]:
    """Return ``{(type, state): (flows, errored)}`` by scanning the flows."""
    q = select(
        flows.c.type,
        flows.c.state,
        func.count(),
        func.sum(func.cast(flows.c.errored, state_counts.c.n.type)),
    ).group_by(flows.c.type, flows.c.state)
    return {(t, s): (int(n), int(e)) for t, s, n, e in session.execute(q)}


def counted(session: Session) -> dict[Key, tuple[int, int]]:
    """Return the same from the counter table (zero rows ignored)."""
    c = state_counts.c
    q = select(c.type, c.state, func.sum(c.n), func.sum(c.errored)).group_by(c.type, c.state)
    return {(t, s): (int(n), int(e)) for t, s, n, e in session.execute(q) if n or e}


def assert_exact(session: Session) -> dict[Key, tuple[int, int]]:
    session.commit()
    found = counted(session)
    assert found == truth(session)
    return found


def test_create_transitions_error_states_and_retries(app: Flask, db: SQLAlchemy) -> None:
    s = db.session
    a = Order.create(customer="a", amount=1)
    b = Order.create(customer="b", amount=1)
    assert assert_exact(s) == {("tests.Order", "new"): (2, 0)}
    a.pay({"by": "card"})
    a.touch()  # paid -> paid: no change of state
    try:
        raise TimeoutError("bank")
    except TimeoutError:
        b.fail()
    assert assert_exact(s) == {
        ("tests.Order", "paid"): (1, 0),
        ("tests.Order", "failed"): (1, 1),
    }
    b.retry_payment()
    b.pay({})
    a.ship()
    a.finish()
    assert assert_exact(s) == {
        ("tests.Order", "paid"): (1, 0),
        ("tests.Order", "done"): (1, 0),
    }


def test_delete_prune_and_destroy_on_complete(app: Flask, db: SQLAlchemy) -> None:
    s = db.session
    kept = Order.create(customer="k", amount=1)
    gone = Order.create(customer="g", amount=1)
    done = []
    for i in range(5):
        f = Order.create(customer=str(i), amount=1)
        f.pay({})
        f.ship()
        f.finish()
        done.append(f.id)
    d = Disposable.create()
    assert assert_exact(s)[("tests.Disposable", "start")] == (1, 0)
    d.close()  # deleted on completion
    gone.delete()
    assert prune_completed(now() + timedelta(seconds=1), batch_size=2) == 5
    assert assert_exact(s) == {("tests.Order", "new"): (1, 0)}
    assert Order.get(kept.id).state == "new"


def test_plain_sql_writes_are_counted(app: Flask, db: SQLAlchemy) -> None:
    s = db.session
    ids = [Order.create(customer=str(i), amount=1).id for i in range(4)]
    s.execute(text("UPDATE flowstate_flows SET state = 'paid' WHERE id = :i"), {"i": ids[0]})
    s.execute(
        text("UPDATE flowstate_flows SET state = 'failed', errored = :t WHERE id = :i"),
        {"t": True, "i": ids[1]},
    )
    s.execute(
        text("UPDATE flowstate_flows SET errored = :t WHERE id = :i"), {"t": True, "i": ids[2]}
    )
    s.execute(text("UPDATE flowstate_flows SET type = 'renamed' WHERE id = :i"), {"i": ids[3]})
    assert assert_exact(s) == {
        ("tests.Order", "paid"): (1, 0),
        ("tests.Order", "failed"): (1, 1),
        ("tests.Order", "new"): (1, 1),
        ("renamed", "new"): (1, 0),
    }
    s.execute(text("DELETE FROM flowstate_flows WHERE type = 'renamed'"))
    assert ("renamed", "new") not in assert_exact(s)


def test_the_sqlite_lock_and_unchanged_updates_do_not_fire(app: Flask, db: SQLAlchemy) -> None:
    s = db.session
    ids = [Order.create(customer=str(i), amount=1).id for i in range(3)]
    s.commit()
    before = assert_exact(s)
    if s.get_bind().dialect.name == "sqlite":
        changes_before = s.execute(text("SELECT total_changes()")).scalar_one()
        s.execute(text("UPDATE flowstate_flows SET seq = seq"))  # the engine's SQLite lock
        s.execute(text("UPDATE flowstate_flows SET state = state, errored = errored"))
        changes = s.execute(text("SELECT total_changes()")).scalar_one() - changes_before
        assert changes == 2 * len(ids)  # the flows themselves, no counter row
    else:
        versions = s.execute(text("SELECT xmin::text FROM flowstate_state_counts")).all()
        s.execute(text("UPDATE flowstate_flows SET seq = seq"))
        s.execute(text("UPDATE flowstate_flows SET state = state, errored = errored"))
        assert s.execute(text("SELECT xmin::text FROM flowstate_state_counts")).all() == versions
    assert assert_exact(s) == before


def test_recount_repairs_corrupted_counters(
    app: Flask, db: SQLAlchemy, runner: FlaskCliRunner
) -> None:
    s = db.session
    for i in range(20):
        f = Order.create(customer=str(i), amount=1)
        if i % 3 == 0:
            f.fail()
    expected = assert_exact(s)
    s.execute(text("UPDATE flowstate_state_counts SET n = n + 7, errored = 3"))
    s.execute(text("DELETE FROM flowstate_state_counts WHERE slot = 1"))
    s.execute(
        text(
            "INSERT INTO flowstate_state_counts (type, state, slot, n, errored)"
            " VALUES ('ghost', 'x', 0, 5, 5)"
        )
    )
    s.commit()
    assert counted(s) != expected
    assert counters.recount(s) == 20
    assert assert_exact(s) == expected

    s.execute(text("UPDATE flowstate_state_counts SET n = 0"))
    s.commit()
    s.close()
    result = runner.invoke(args=["flowstate", "recount"])
    assert result.exit_code == 0, result.output
    assert "counted 20 flow(s)" in result.output
    assert "warning" not in result.output
    assert assert_exact(s) == expected


def test_create_all_on_the_hosts_copy_installs_the_triggers(app: Flask, db: SQLAlchemy) -> None:
    assert db.metadata.tables["flowstate_state_counts"] is not state_counts  # a copy
    db.drop_all()
    with db.engine.connect() as conn:
        assert not counters.installed(conn)
    db.create_all()
    with db.engine.connect() as conn:
        assert counters.installed(conn)
    Order.create(customer="c", amount=1)
    assert assert_exact(db.session) == {("tests.Order", "new"): (1, 0)}


def test_install_counters_from_a_migration_counts_existing_flows(
    app: Flask, db: SQLAlchemy
) -> None:
    for i in range(3):
        Order.create(customer=str(i), amount=1).fail()
    db.session.commit()
    with db.engine.begin() as conn:
        uninstall_counters(Operations(MigrationContext.configure(conn)))
        assert not counters.installed(conn)
        conn.execute(text("DELETE FROM flowstate_state_counts"))
    Order.create(customer="uncounted", amount=1)
    with db.engine.begin() as conn:
        install_counters(Operations(MigrationContext.configure(conn)))
        assert counters.installed(conn)
    assert assert_exact(db.session) == {
        ("tests.Order", "failed"): (3, 3),
        ("tests.Order", "new"): (1, 0),
    }


# -- the admin reads ---------------------------------------------------------------------


@pytest.fixture
def admin(make_app: Callable[..., Flask]) -> Iterator[Flask]:
    app = make_app(FLOWSTATE_ADMIN=True, FLOWSTATE_PUBLIC=True, FLOWSTATE_POLL_SECONDS=0)
    with app.app_context():
        yield app


def test_the_admin_scans_with_a_notice_when_the_triggers_are_missing(
    admin: Flask,
) -> None:
    db: SQLAlchemy = admin.extensions["sqlalchemy"]
    for i in range(4):
        f = Order.create(customer=str(i), amount=1)
        if i % 2:
            f.fail()
    db.session.commit()
    with db.engine.begin() as conn:
        counters.uninstall(conn)
    Order.create(customer="not counted", amount=1)  # the counters drift
    db.session.commit()
    web = admin.test_client()

    page = web.get("/flows/").get_data(as_text=True)
    assert "flask flowstate recount" in page
    found = queries.state_counts(db.session, "tests.Order")
    assert found.scanned
    assert {(c.type, c.state): (c.total, c.errored) for c in found.cells} == truth(db.session)
    listing = web.get("/flows/types/tests.Order").get_data(as_text=True)
    assert "<b>5</b> flows of this type, <b>2</b> errored." in listing
    assert "counted by scanning" in listing

    with db.engine.begin() as conn:
        counters.install(conn)  # installs and counts what is there
    page = web.get("/flows/").get_data(as_text=True)
    assert "flask flowstate recount" not in page
    found = queries.state_counts(db.session, "tests.Order")
    assert not found.scanned
    assert {(c.type, c.state): (c.total, c.errored) for c in found.cells} == truth(db.session)


def test_type_page_totals_from_counters_and_a_bounded_count(
    admin: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = []
    for i in range(6):
        f = Order.create(customer=f"c{i % 2}", amount=1)
        ids.append(f.id)
        if i < 2:
            f.fail()
    web = admin.test_client()

    def summary(query: str = "") -> str:
        html = web.get(f"/flows/types/tests.Order{query}").get_data(as_text=True)
        found = re.search(r'<p class="fs-list-summary">(.*?)</p>', html, re.S)
        assert found, html[:500]
        return " ".join(re.sub(r"<[^>]+>", "", found.group(1)).split())

    assert summary() == "6 flows of this type, 2 errored."
    assert summary("?errored=1") == "6 flows of this type, 2 errored. 2 match the filter."
    assert summary("?errored=0").endswith(" 4 match the filter.")
    assert summary("?state=new").endswith(" 4 match the filter.")
    assert summary("?state=failed&errored=0").endswith(" 0 match the filter.")
    assert summary("?q=customer%3Dc0").endswith(" 3 match the filter.")
    assert summary(f"?q=%23{ids[0]}").endswith(" 1 matches the filter.")  # #id: the id only
    # A bare number is an id or any numeric prop equal to it: every order has amount=1.
    assert summary("?q=1").endswith(" 6 match the filter.")
    monkeypatch.setattr(queries, "COUNT_LIMIT", 2)
    # A first page holding every match counts its own rows: exact, whatever the cap.
    assert summary("?q=customer%3Dc0").endswith(" 3 match the filter.")
    # Any other page asks the database, which stops counting at the cap.
    older = f"&before={ids[-1] + 1}"
    assert summary(f"?q=customer%3Dc0{older}").endswith(
        " 2+ match the filter (counting stopped there)."
    )
    assert summary("?state=new").endswith(" 4 match the filter.")  # counters: never capped


def test_oldest_errored_per_type(admin: Flask) -> None:
    first = Order.create(customer="first", amount=1)
    first.fail()
    Order.create(customer="second", amount=1).fail()
    Order.create(customer="fine", amount=1)
    p = Pendulum.create()
    db: SQLAlchemy = admin.extensions["sqlalchemy"]
    found = queries.oldest_errored(db.session, ["tests.Order", Pendulum.type_name])
    assert set(found) == {"tests.Order"}
    assert found["tests.Order"].flow_id == first.id
    assert found["tests.Order"].state == "failed"
    assert p.state == "pending"


# -- concurrency (PostgreSQL: real row locks) ----------------------------------------------

WORKERS = 16
ROUNDS = 20


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_opposite_transitions_in_parallel_do_not_deadlock(engine: Engine) -> None:
    with Session(engine) as s:
        made = [Pendulum.create(session=s).id for _ in range(WORKERS * counters.SLOTS)]
    # All in one slot: every transaction touches the same two counter rows.
    ids = [i for i in made if i % counters.SLOTS == made[0] % counters.SLOTS][:WORKERS]
    assert len(ids) == WORKERS
    with Session(engine) as s:
        for flow_id in ids[::2]:
            Pendulum.get(flow_id, session=s).pick()  # half start in "picked"
    barrier = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    def worker(flow_id: int) -> None:
        try:
            with Session(engine) as s:
                flow = Pendulum.get(flow_id, session=s)
                s.commit()
                for _ in range(ROUNDS):
                    barrier.wait()
                    # Half move pending -> picked while the other half move picked -> pending.
                    flow.release() if flow.state == "picked" else flow.pick()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engine) as s:
        found = assert_exact(s)
        n = WORKERS * counters.SLOTS
        assert found[(Pendulum.type_name, "picked")] == (WORKERS // 2, 0)
        assert found[(Pendulum.type_name, "pending")] == (n - WORKERS // 2, 0)
