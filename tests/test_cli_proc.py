"""The operator commands through the real ``flask`` CLI and ``flowstate-web``, in a subprocess.

The standalone app (``flowstate_web.app``) migrates the database, imports the flow modules
named in ``FLOWSTATE_FLOW_MODULES`` and runs the command; flows are created from the test
process in the same database. Both databases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, update
from sqlalchemy.orm import Session

from flowstate_web.models import flows
from tests._proc import run
from tests.timed_flows import ExplodingTimeoutFlow

from .admin.flows import SimpleRetryFlow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_flask_and_flowstate_web_cli(empty_db_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLOWSTATE_INSTANCE_PATH": str(tmp_path / "instance"),
        "FLOWSTATE_DATABASE_URL": empty_db_url,
        "FLOWSTATE_ADMIN_PASSWORD": "secret",
        "FLOWSTATE_FLOW_MODULES": "flowstate_web.demo.sync_flow,flowstate_web.demo.orders_flow,"
        "tests.admin.flows",
    }
    flask = [BIN / "flask", "--app", "flowstate_web.app", "flowstate"]
    # lint over the demo flows (and the admin's test flows): no errors; migrates the database.
    linted = json.loads(run([*flask, "lint", "--json"], cwd=tmp_path, env=env).stdout)
    assert {"SyncThirdPartyApiFlow", "OrderFulfilmentFlow"} <= set(linted["types"])
    assert linted["errors"] == []
    assert {(m["type"], m["code"]) for m in linted["warnings"]} <= {
        ("AdminBranchyFlow", "FS103"),
        ("AdminHostileFlow", "FS103"),
    }

    engine = create_engine(empty_db_url)
    with Session(engine) as session:
        flow = SimpleRetryFlow.create(session=session, ref="proc")
        flow.fail()
        flow_id = flow.id
    engine.dispose()

    listed = json.loads(
        run(
            [*flask, "list", "--type", "AdminSimpleRetryFlow", "--errored", "--json"],
            cwd=tmp_path,
            env=env,
        ).stdout
    )
    assert [(f["id"], f["state"]) for f in listed["flows"]] == [(flow_id, "failed")]
    retried = run(
        [*flask, "retry", str(flow_id), "--reason", "from a script", "--actor", "cron", "--json"],
        cwd=tmp_path,
        env=env,
    )
    assert json.loads(retried.stdout)["retried"] == 1
    # The standalone command passes the same commands through.
    shown = json.loads(
        run([BIN / "flowstate-web", "show", str(flow_id), "--json"], cwd=tmp_path, env=env).stdout
    )
    assert shown["flow"]["state"] == "new"
    last = shown["history"][-1]
    assert (last["name"], last["actor"], last["reason"], last["meta"]) == (
        "again",
        "cron",
        "from a script",
        {"cli": "retry"},
    )
    # Exit codes: 1 for a refused retry, 2 for a usage error.
    refused = subprocess.run(
        [BIN / "flowstate-web", "retry", str(flow_id)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1, refused.stderr
    assert "NOT retried (refused): state 'new' has no retry transition" in refused.stdout
    usage = subprocess.run(
        [*flask, "list", "--type", "nope"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert usage.returncode == 2
    assert "no flow type 'nope'" in usage.stderr


def test_flowstate_web_sweep_and_lint_exit_codes(empty_db_url: str, tmp_path: Path) -> None:
    """``flowstate-web lint`` with no flow module: exit 3; ``sweep`` with a raising timeout: 1."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLOWSTATE_INSTANCE_PATH": str(tmp_path / "instance"),
        "FLOWSTATE_DATABASE_URL": empty_db_url,
        "FLOWSTATE_ADMIN_PASSWORD": "secret",
    }
    env.pop("FLOWSTATE_FLOW_MODULES", None)
    cli = [str(BIN / "flowstate-web")]
    nothing = subprocess.run(
        [*cli, "lint"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert nothing.returncode == 3, nothing.stdout + nothing.stderr
    assert nothing.stdout == ""
    assert "no flow types registered: nothing to lint" in nothing.stderr

    env["FLOWSTATE_FLOW_MODULES"] = "tests.timed_flows"
    engine = create_engine(empty_db_url)  # the lint run migrated the database
    with Session(engine) as session:
        boom = ExplodingTimeoutFlow.create(session=session, ref="boom")
        fine = ExplodingTimeoutFlow.create(session=session, ref="fine")
        session.execute(
            update(flows)
            .where(flows.c.id.in_([boom.id, fine.id]))
            .values(state_entered_at=datetime.now(UTC) - timedelta(hours=1))
        )
        session.commit()
        swept = subprocess.run(
            [*cli, "sweep"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert swept.returncode == 1, swept.stdout + swept.stderr
        assert swept.stdout == "failed 1 stalled flow(s)\n"
        assert (
            f"  tests.ExplodingTimeoutFlow #{boom.id} in state 'waiting': time_out raised"
            " RuntimeError: time_out exploded for boom\n"
        ) in swept.stderr
        states = [ExplodingTimeoutFlow.get(f.id, session=session).state for f in (boom, fine)]
        assert states == ["waiting", "timed_out"]
    engine.dispose()
