"""``flask flowstate bulk-retry`` (canary runs driven to the end) and parallel advances."""

from __future__ import annotations

import json
import threading

from flask import Flask
from flask.testing import FlaskCliRunner
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from flowstate_web.admin import bulk_runs
from flowstate_web.admin.filters import ListFilter
from flowstate_web.models import metadata, transitions

from .admin.flows import SimpleRetryFlow


def errored(n: int, session: Session | None = None) -> list[int]:
    ids = []
    for i in range(n):
        flow = SimpleRetryFlow.create(ref=f"s{i}", session=session)
        flow.run("fail", error=None)
        ids.append(flow.id)
    return ids


def test_cli_drives_a_run_to_done(app: Flask, db: SQLAlchemy, runner: FlaskCliRunner) -> None:
    ids = errored(5)
    args = ["flowstate", "bulk-retry", "--type", "AdminSimpleRetryFlow", "--canary", "2"]
    args += ["--wait", "0.05", "--rate", "0", "--poll", "0.02", "--actor", "ops"]

    result = runner.invoke(args=[*args, "--reason", "fixed", "--json"])

    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert (doc["status"], doc["retried"], doc["canary_ids"]) == ("done", 5, ids[:2])
    assert all(SimpleRetryFlow.get(i).state == "new" for i in ids)
    entry = SimpleRetryFlow.get(ids[4]).history()[-1]
    assert (entry.actor, entry.reason, entry.meta) == (
        "ops",
        "fixed",
        {"admin": "bulk_run", "run": doc["id"]},
    )


def test_cli_resumes_a_paused_run_and_reports(
    app: Flask, db: SQLAlchemy, runner: FlaskCliRunner
) -> None:
    errored(3)
    run = bulk_runs.start(
        db.session(),
        SimpleRetryFlow,
        ListFilter(),
        chosen={},
        actor="alice",
        reason=None,
        canary=1,
        wait_seconds=0,
        rate=0,
    )
    bulk_runs.control(db.session(), run.id, "pause", "alice")
    db.session.remove()

    result = runner.invoke(args=["flowstate", "bulk-retry", "--run", str(run.id), "--poll", "0.02"])

    assert result.exit_code == 0, result.output
    assert f"run #{run.id}: done; retried 3, skipped 0, failed 0" in result.output


def test_cli_usage_errors(app: Flask, runner: FlaskCliRunner) -> None:
    for args, message in [
        ([], "give --type T (a new run) or --run ID"),
        (["--type", "Nope"], "no flow type 'Nope'"),
        (["--run", "99"], "no bulk run #99"),
        (["--type", "AdminSimpleRetryFlow", "--transition", "failed=nope"], "--transition"),
        (["--type", "AdminSimpleRetryFlow", "--threshold", "0"], "threshold"),
    ]:
        result = runner.invoke(args=["flowstate", "bulk-retry", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, result.output


def test_cli_requires_a_reason_when_configured(
    make_app: object, runner: FlaskCliRunner, app: Flask
) -> None:
    app.config["FLOWSTATE_REQUIRE_REASON"] = True
    for args in (["bulk-retry", "--type", "AdminSimpleRetryFlow"], ["retry", "1"]):
        result = runner.invoke(args=["flowstate", *args, "--reason", " "])
        assert result.exit_code == 2, result.output
        assert "--reason is required (FLOWSTATE_REQUIRE_REASON is set)" in result.output


def test_parallel_advances_retry_each_flow_once(pg_url: str) -> None:
    """Two operators' pages polling one run on PostgreSQL: the run lock skips, never doubles."""
    engine = create_engine(pg_url, pool_size=6)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    try:
        with Session(engine) as s:
            ids = errored(40, s)
            run = bulk_runs.start(
                s,
                SimpleRetryFlow,
                ListFilter(),
                chosen={},
                actor="a",
                reason=None,
                canary=1,
                wait_seconds=0,
                rate=0,
            )
        errors: list[BaseException] = []
        busy: list[bool] = []
        barrier = threading.Barrier(2)

        def poller() -> None:
            with Session(engine) as s:
                try:
                    barrier.wait()
                    while True:
                        found = bulk_runs.advance(s, run.id, batch_size=3)
                        busy.append(found.busy)
                        if not found.active:
                            return
                except BaseException as exc:  # reported below
                    errors.append(exc)

        threads = [threading.Thread(target=poller) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        with Session(engine) as s:
            final = bulk_runs.get(s, run.id)
            assert (final.status, final.retried, final.skipped) == ("done", 40, 0)
            q = select(func.count()).where(transitions.c.name == "again")
            assert s.execute(q).scalar() == 40
            assert all(SimpleRetryFlow.get(i, session=s).seq == 2 for i in ids)
    finally:
        metadata.drop_all(engine)
        engine.dispose()
