"""The history rollup: counts and percentiles equal a recount, runs are incremental,
concurrent rollups count each row once, late commits are picked up, retention prunes."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from flowstate_web import rollup
from flowstate_web.models import flows, rollup_cursor, rollup_dwell, rollup_edges, transitions
from tests.flows import Order

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def make_history(engine: Engine, n: int) -> list[int]:
    """Create ``n`` orders with varied paths; return their ids."""
    ids = []
    with Session(engine) as s:
        for i in range(n):
            flow = Order.create(session=s, customer=f"c{i}", amount=1 + i % 3)
            ids.append(flow.id)
            if i % 4 == 0:
                flow.fail()
                if i % 8 == 0:
                    flow.run("retry_payment", meta={"admin": "retry"})
                continue
            flow.pay({"n": i})
            if i % 3 == 2:  # a props-only save between two transitions: no edge, no split wait
                flow.customer = f"c{i}-edited"
                flow.save()
            if i % 4 == 1:
                flow.ship()
                flow.finish()
    return ids


def spread(engine: Engine, start: datetime, step: timedelta) -> None:
    """Rewrite history times: flow k created at start + k*step, its i-th transition i*step later."""
    with engine.begin() as c:
        for fid, _created in c.execute(select(flows.c.id, flows.c.created_at).order_by(flows.c.id)):
            base = start + (fid % 97) * step
            c.execute(update(flows).where(flows.c.id == fid).values(created_at=base))
            for tid, seq in c.execute(
                select(transitions.c.id, transitions.c.seq).where(transitions.c.flow_id == fid)
            ):
                c.execute(
                    update(transitions)
                    .where(transitions.c.id == tid)
                    .values(created_at=base + seq * seq * step)
                )


def recount(engine: Engine) -> tuple[Counter[tuple[str, str, str]], dict[str, Counter[int]]]:
    """Count edges and time-in-state bins straight from the history."""
    edges: Counter[tuple[str, str, str]] = Counter()
    dwell: dict[str, Counter[int]] = defaultdict(Counter)
    with engine.connect() as c:
        created = dict(c.execute(select(flows.c.id, flows.c.created_at)).all())
        rows = c.execute(
            select(transitions).order_by(transitions.c.flow_id, transitions.c.seq)
        ).all()
    prev: dict[int, Any] = {}
    for r in rows:
        if r.kind == "update":
            continue  # saves change props only: not an edge, and the state's wait goes on
        edges[r.name, r.from_state, r.to_state] += 1
        before = prev.get(r.flow_id, created[r.flow_id])
        seconds = (rollup.as_utc(r.created_at) - rollup.as_utc(before)).total_seconds()
        dwell[r.from_state][rollup.bin_of(seconds)] += 1
        prev[r.flow_id] = r.created_at
    return edges, dwell


def all_time(engine: Engine) -> tuple[Counter[tuple[str, str, str]], dict[str, Counter[int]]]:
    edges: Counter[tuple[str, str, str]] = Counter()
    dwell: dict[str, Counter[int]] = defaultdict(Counter)
    with Session(engine) as s:
        e_rows, d_rows = rollup.totals(s)
    for r in e_rows:
        edges[r.name, r.from_state, r.to_state] += r.n
    for r in d_rows:
        dwell[r.state][r.bin] += r.n
    return edges, dwell


def test_bins_are_log_scale() -> None:
    assert rollup.bin_of(0) == 0
    assert rollup.bin_of(0.1) == 0
    assert rollup.bin_of(0.11) == 1
    for seconds in (0.5, 3, 61, 3600, 86_400 * 3):
        i = rollup.bin_of(seconds)
        assert rollup.BOUNDS[i - 1] < seconds <= rollup.BOUNDS[i]
        assert abs(rollup.bin_value(i) - seconds) / seconds < 0.2
    assert rollup.bin_of(10**9) == len(rollup.BOUNDS)
    assert rollup.percentile({}, 0.5) is None
    assert rollup.percentile({3: 1, 10: 1}, 0.5) == rollup.bin_value(3)
    assert rollup.percentile({3: 1, 10: 1}, 0.95) == rollup.bin_value(10)


def test_counts_and_percentiles_match_a_recount(engine: Engine) -> None:
    make_history(engine, 40)
    spread(engine, NOW - timedelta(hours=5), timedelta(seconds=37))
    with Session(engine) as s:
        assert rollup.run(s, now=NOW) == s.scalar(select(func.count()).select_from(transitions))
    edges, dwell = recount(engine)
    assert all_time(engine) == (edges, dwell)
    with Session(engine) as s:
        day = rollup.window(s, Order.type_name, "24h", now=NOW)
        hour = rollup.window(s, Order.type_name, "1h", now=NOW)
        week = rollup.window(s, Order.type_name, "7d", now=NOW)
    got = Counter({(e.name, e.from_state, e.to_state): e.n for e in day.edges})
    assert got == edges
    assert Counter({(e.name, e.from_state, e.to_state): e.n for e in week.edges}) == edges
    assert sum(e.n for e in hour.edges) < sum(edges.values())  # older rows are outside
    assert day.dwell == {k: dict(v) for k, v in dwell.items()}
    for state, bins in dwell.items():
        expected = sorted(b for b, n in bins.items() for _ in range(n))
        p50 = rollup.bin_value(expected[max(0, (len(expected) + 1) // 2 - 1)])
        assert day.p(state, 0.5) == pytest.approx(p50)
    assert day.out_of("new") == sum(n for (_, src, _), n in edges.items() if src == "new")


def test_incremental_runs_add_only_new_rows(engine: Engine) -> None:
    make_history(engine, 12)
    with Session(engine) as s:
        first = rollup.run(s, limit=5)
        assert first == 5
        while rollup.run(s, limit=5):
            pass
        assert rollup.run(s) == 0
    make_history(engine, 9)
    with Session(engine) as s:
        assert rollup.run(s) > 0
        assert rollup.run(s) == 0
    assert all_time(engine) == recount(engine)
    with Session(engine) as s:
        assert s.execute(select(rollup_cursor.c.gaps)).scalar_one() == []


def test_actor_kind_from_meta(engine: Engine) -> None:
    with Session(engine) as s:
        flow = Order.create(session=s, customer="c", amount=1)
        flow.fail()
        flow.run("retry_payment", meta={"admin": "retry"})
        flow.fail()
        flow.run("retry_payment", meta={"cli": "retry"})
        flow.fail()
        flow.retry_payment()
        rollup.run(s)
        kinds = dict(
            s.execute(
                select(rollup_edges.c.actor_kind, rollup_edges.c.n).where(
                    rollup_edges.c.grain == rollup.ALL_TIME,
                    rollup_edges.c.name == "retry_payment",
                )
            ).all()
        )
    assert kinds == {"admin": 1, "cli": 1, "code": 1}


def test_retention_prunes_old_periods_but_keeps_totals(engine: Engine) -> None:
    make_history(engine, 8)
    spread(engine, NOW - timedelta(days=10), timedelta(seconds=5))
    with Session(engine) as s:
        rollup.run(s, now=NOW)
        grains = set(s.scalars(select(rollup_edges.c.grain).distinct()))
        assert grains == {rollup.ALL_TIME}  # 10 days old: only the all-time rows stay
        assert set(s.scalars(select(rollup_dwell.c.grain).distinct())) == {rollup.ALL_TIME}
        assert rollup.window(s, Order.type_name, "7d", now=NOW).edges == []
    assert all_time(engine) == recount(engine)
    # A shorter retention given by the caller prunes hourly rows it kept before.
    make_history(engine, 4)
    with Session(engine) as s:
        rollup.run(s, now=datetime.now(UTC) + timedelta(days=3), retention=timedelta(days=2))
        assert set(s.scalars(select(rollup_edges.c.grain).distinct())) == {rollup.ALL_TIME}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_concurrent_rollups_count_each_row_once(engine: Engine) -> None:
    make_history(engine, 60)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        try:
            with Session(engine) as s:
                barrier.wait()
                while rollup.run(s, limit=7):
                    pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all_time(engine) == recount(engine)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_lower_id_committed_late_is_counted_once(engine: Engine) -> None:
    with Session(engine) as s:
        early = Order.create(session=s, customer="a", amount=1).id
        late = Order.create(session=s, customer="b", amount=1).id
    with Session(engine) as slow, Session(engine) as fast:
        slow.begin()
        Order.get(early, session=slow).pay({"x": 1})  # takes the lower id, not committed
        Order.get(late, session=fast).pay({"x": 2})  # higher id, committed
        assert rollup.run(fast) == 1
        gaps = fast.execute(select(rollup_cursor.c.gaps)).scalar_one()
        assert len(gaps) == 1
        slow.commit()
    with Session(engine) as s:
        assert rollup.run(s) == 1  # the late row, from the gap list
        assert rollup.run(s) == 0
        assert s.execute(select(rollup_cursor.c.gaps)).scalar_one() == []
    assert all_time(engine) == recount(engine)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_gaps_of_rolled_back_ids_expire(engine: Engine) -> None:
    with Session(engine) as s:
        a = Order.create(session=s, customer="a", amount=1).id
        b = Order.create(session=s, customer="b", amount=1).id
    with Session(engine) as s:
        s.begin()
        Order.get(a, session=s).pay({"x": 1})
        s.rollback()  # its id is never used
        Order.get(b, session=s).pay({"x": 2})
        assert rollup.run(s) == 1
        assert len(s.execute(select(rollup_cursor.c.gaps)).scalar_one()) == 1
        later = datetime.now(UTC) + rollup.GAP_TIMEOUT + timedelta(seconds=1)
        assert rollup.run(s, now=later) == 0
        assert s.execute(select(rollup_cursor.c.gaps)).scalar_one() == []


def test_rollup_command(app: Flask) -> None:
    with app.app_context():
        flow = Order.create(customer="c", amount=1)
        flow.pay({"x": 1})
        flow.ship()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["flowstate", "rollup", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert "rolled up 2 history row(s)" in result.output
    again = runner.invoke(args=["flowstate", "rollup", "--retention-days", "2"])
    assert "rolled up 0 history row(s)" in again.output
    bad = runner.invoke(args=["flowstate", "rollup", "--retention-days", "0"])
    assert bad.exit_code == 2
