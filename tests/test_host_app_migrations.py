"""A host app's own migrations include the flowstate tables; one transaction spans both.

The host (``tests/host_app``) has its own ``db``, its own ``Customer`` model and its own
migrations directory, made here by ``flask db init`` and ``flask db migrate`` (the real CLI).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, inspect

from tests._proc import run
from tests.host_app import Customer, create_app, db
from tests.host_app.flows import HostOnboardingFlow, welcomed

FLOWSTATE_TABLES = {"flowstate_flows", "flowstate_transitions", "flowstate_artefacts"}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def url(empty_db_url: str) -> str:
    """Return an empty database of this test alone (SQLite and PostgreSQL)."""
    return empty_db_url


def host_db(url: str, migrations: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTATE_")}
    env |= {
        "HOST_APP_DATABASE_URL": url,
        "HOST_APP_MIGRATIONS": str(migrations),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "flask", "--app", "tests.host_app", "db", *args]
    return run(cmd, cwd=migrations.parent, env=env, timeout=120)


@pytest.fixture
def host(url: str) -> Iterator[Flask]:
    """Return the host app with its tables created (the migrations are tested on their own)."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    with app.app_context():
        db.create_all()
        yield app
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def test_autogenerate_includes_the_host_and_flowstate_tables(url: str, tmp_path: Path) -> None:
    migrations = tmp_path / "host_migrations"
    host_db(url, migrations, "init")
    host_db(url, migrations, "migrate", "-m", "initial")
    [script] = (migrations / "versions").glob("*.py")
    source = script.read_text()
    for table in ("customers", *FLOWSTATE_TABLES):
        assert f"op.create_table('{table}'" in source, table
    host_db(url, migrations, "upgrade")
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= FLOWSTATE_TABLES | {"customers"}
    finally:
        engine.dispose()
    check = host_db(url, migrations, "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_flow_and_host_change_commit_together(host: Flask) -> None:
    customer = Customer(name="Ada")
    db.session.add(customer)
    db.session.commit()
    flow = HostOnboardingFlow.create(customer_id=customer.id)
    welcomed.clear()

    with db.session.begin():
        customer.status = "active"
        flow.activate()
        assert welcomed == []  # callbacks wait for the commit

    assert welcomed == [flow.id]
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).status == "active"
    assert HostOnboardingFlow.get(flow.id).state == "active"


def test_flow_and_host_change_roll_back_together(host: Flask) -> None:
    customer = Customer(name="Grace")
    db.session.add(customer)
    db.session.commit()
    flow = HostOnboardingFlow.create(customer_id=customer.id)
    welcomed.clear()

    def activate_then_fail() -> None:
        with db.session.begin():
            customer.status = "active"
            flow.activate()
            raise RuntimeError("payment provider down")

    with pytest.raises(RuntimeError, match="payment provider down"):
        activate_then_fail()

    assert welcomed == []  # never after a rollback
    db.session.expire_all()
    assert db.session.get(Customer, customer.id).status == "new"
    fresh = HostOnboardingFlow.get(flow.id)
    assert fresh.state == "new"
    assert fresh.history() == []
