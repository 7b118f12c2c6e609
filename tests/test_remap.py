"""Remap of orphaned states: engine, batches, history, counters, CLI; both databases."""

from __future__ import annotations

import json
import threading
from itertools import pairwise
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.orm import Session

from flowstate_web import remap
from flowstate_web.models import flows, metadata, transitions

from .admin.flows import BranchyFlow
from .test_counters import assert_exact


def orphan(db: SQLAlchemy, n: int, state: str = "gone_state") -> list[int]:
    """Return ids of ``n`` BranchyFlows moved (behind the engine's back) into ``state``."""
    ids = [BranchyFlow.create(ref=f"o{i}").id for i in range(n)]
    db.session.execute(update(flows).where(flows.c.id.in_(ids)).values(state=state))
    db.session.commit()
    return ids


def check_invariants(s: Session, ids: list[int]) -> None:
    """Per flow: seq 1..n without gaps, each entry starts where the last ended, state = last."""
    for flow_id in ids:
        row = s.execute(select(flows).where(flows.c.id == flow_id)).one()
        history = s.execute(
            select(transitions).where(transitions.c.flow_id == flow_id).order_by(transitions.c.seq)
        ).all()
        assert [h.seq for h in history] == list(range(1, row.seq + 1))
        for a, b in pairwise(history):
            if b.kind != "remap":
                assert b.from_state == a.to_state
        assert (history[-1].to_state if history else "new") == row.state


def test_remap_moves_in_batches_with_history_and_counters(app: Flask, db: SQLAlchemy) -> None:
    ids = orphan(db, 5)
    keep = BranchyFlow.create(ref="keep")
    plan = remap.plan("AdminBranchyFlow", "gone_state", "broken")
    assert remap.count(plan) == 5

    assert remap.run_batch(plan, actor="ops", reason="renamed", batch_size=2) == 2
    assert remap.count(plan) == 3
    moved, done = remap.run(plan, actor="ops", reason="renamed", batch_size=2)

    assert (moved, done) == (3, True)
    for flow_id in ids:
        flow = BranchyFlow.get(flow_id)
        assert (flow.state, flow.errored, flow.seq) == ("broken", True, 1)
        entry = flow.history()[-1]
        assert (entry.kind, entry.name, entry.from_state, entry.to_state) == (
            "remap",
            "remap",
            "gone_state",
            "broken",
        )
        assert (entry.actor, entry.reason) == ("ops", "renamed")
        assert flow.last_errored_at is not None
    # A remapped flow is an ordinary flow again: its retry runs.
    BranchyFlow.get(ids[0]).retry("retry_work")
    assert BranchyFlow.get(keep.id).state == "new"
    assert assert_exact(db.session)[("AdminBranchyFlow", "broken")] == (4, 4)
    check_invariants(db.session, [*ids, keep.id])


def test_remap_to_a_final_state_completes(app: Flask, db: SQLAlchemy) -> None:
    (flow_id,) = orphan(db, 1)
    remap.run(remap.plan("AdminBranchyFlow", "gone_state", "done"), actor="ops", reason=None)
    flow = BranchyFlow.get(flow_id)
    assert (flow.state, flow.errored, flow.is_final) == ("done", False, True)
    assert flow.completed_at is not None


@pytest.mark.parametrize(
    ("type_name", "source", "target", "message"),
    [
        ("NoSuchFlow", "a", "b", "flow type 'NoSuchFlow' is not defined"),
        ("AdminBranchyFlow", "working", "new", "state 'working' is declared"),
        ("AdminBranchyFlow", "gone", "nowhere", "target state 'nowhere' is not declared"),
    ],
)
def test_remap_refuses(app: Flask, type_name: str, source: str, target: str, message: str) -> None:
    with pytest.raises(remap.RemapError, match=message):
        remap.plan(type_name, source, target)


def test_remap_inside_a_callers_transaction_is_refused(app: Flask, db: SQLAlchemy) -> None:
    plan = remap.plan("AdminBranchyFlow", "gone_state", "new")
    with db.session.begin(), pytest.raises(RuntimeError, match="outside a transaction"):
        remap.run_batch(plan, actor="ops", reason=None)


def test_concurrent_remaps_move_each_flow_once(pg_url: str) -> None:
    """Four remaps of the same rows at once on PostgreSQL: SKIP LOCKED shares the batches."""
    engine = create_engine(pg_url, pool_size=6)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    try:
        with Session(engine) as s:
            ids = [BranchyFlow.create(ref=f"o{i}", session=s).id for i in range(60)]
            s.execute(update(flows).where(flows.c.id.in_(ids)).values(state="gone_state"))
            s.commit()
        plan = remap.plan("AdminBranchyFlow", "gone_state", "new")
        moved: list[int] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def worker() -> None:
            with Session(engine) as s:
                try:
                    barrier.wait()
                    n, _ = remap.run(plan, actor="ops", reason=None, session=s, batch_size=5)
                    moved.append(n)
                except BaseException as exc:  # reported below
                    errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert sum(moved) == 60
        with Session(engine) as s:
            q = select(func.count()).where(transitions.c.kind == "remap")
            assert s.execute(q).scalar() == 60
            check_invariants(s, ids)
            assert_exact(s)
    finally:
        metadata.drop_all(engine)
        engine.dispose()


def run_cli(runner: FlaskCliRunner, *args: str) -> Any:
    return runner.invoke(args=["flowstate", *args])


def test_cli_remap(app: Flask, db: SQLAlchemy, runner: FlaskCliRunner) -> None:
    ids = orphan(db, 3)
    base = ["remap", "--type", "AdminBranchyFlow", "--from", "gone_state", "--to", "new"]

    dry = run_cli(runner, *base, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["would_move"] == 3
    assert all(BranchyFlow.get(i).state == "gone_state" for i in ids)

    done = run_cli(runner, *base, "--reason", "state renamed", "--actor", "ops")
    assert done.exit_code == 0, done.output
    assert "moved 3 AdminBranchyFlow flow(s) from 'gone_state' to 'new' as ops" in done.output
    entry = BranchyFlow.get(ids[0]).history()[-1]
    assert (entry.kind, entry.actor, entry.reason) == ("remap", "ops", "state renamed")

    bad = run_cli(runner, "remap", "--type", "AdminBranchyFlow", "--from", "new", "--to", "done")
    assert bad.exit_code == 2
    assert "state 'new' is declared" in bad.output
