"""Many workers, one flow: exactly one transition wins, with real parallel connections."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from flowstate_web import InvalidTransitionError
from flowstate_web.models import transitions
from tests import flows as test_flows
from tests.flows import Order

WORKERS = 16
ROUNDS = 25


def race(engine: Engine, flow_id: int) -> list[str]:
    """Let WORKERS threads attempt the same transition at the same moment."""
    barrier = threading.Barrier(WORKERS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with Session(engine) as s:
            flow = Order.get(flow_id, session=s)  # every worker saw "new"
            s.commit()
            barrier.wait()
            try:
                flow.pay({"by": threading.get_ident()})
                result = "ok"
            except InvalidTransitionError:
                result = "invalid"
            except Exception as exc:  # anything else is a bug the test must show
                result = f"{type(exc).__name__}: {exc}"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_sixteen_workers_one_winner(engine: Engine) -> None:
    for _ in range(ROUNDS):
        test_flows.calls.clear()
        with Session(engine) as s:
            flow_id = Order.create(session=s, customer="c", amount=1).id
        outcomes = race(engine, flow_id)
        assert sorted(outcomes) == ["invalid"] * (WORKERS - 1) + ["ok"], outcomes
        with Session(engine) as s:
            n = s.scalar(
                select(func.count())
                .select_from(transitions)
                .where(transitions.c.flow_id == flow_id)
            )
            assert n == 1
            assert Order.get(flow_id, session=s).state == "paid"
        assert test_flows.calls == [("paid", flow_id)]  # the callback ran exactly once


def test_distinct_flows_do_not_block_each_other(engine: Engine) -> None:
    with Session(engine) as s:
        ids = [Order.create(session=s, customer=str(i), amount=1).id for i in range(WORKERS)]
    barrier = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    def worker(flow_id: int) -> None:
        try:
            with Session(engine) as s:
                flow = Order.get(flow_id, session=s)
                s.commit()
                barrier.wait()
                flow.pay({})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engine) as s:
        states: Any = {Order.get(i, session=s).state for i in ids}
    assert states == {"paid"}
