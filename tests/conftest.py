"""Shared fixtures: an app on SQLite and on PostgreSQL, its db, client and CLI runner.

PostgreSQL: ``FLOWSTATE_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
Each test session creates its own throw-away database next to it, so parallel runs never
collide. Outside CI an unreachable server skips the PostgreSQL tests, saying why; with
``CI`` set it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from flask_sqlalchemy import SQLAlchemy
from jinja2 import StrictUndefined
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from flowstate_web import FlowState
from flowstate_web.models import metadata

PG_URL = os.environ.get(
    "FLOWSTATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """Return the URL of a fresh PostgreSQL database for this test session (dropped after)."""
    admin_url = make_url(PG_URL)
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        msg = f"PostgreSQL at {admin_url.render_as_string(hide_password=True)} unreachable: {exc}"
        if IN_CI:
            pytest.fail(f"{msg} (CI requires PostgreSQL)")
        pytest.skip(msg)
    admin.dispose()
    with scratch_database(PG_URL, "flowstate_test") as url:
        yield url


@contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """Create an empty PostgreSQL database on ``server_url``'s server; drop it on exit."""
    admin = create_engine(make_url(server_url), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """Return the URL of an empty PostgreSQL database of this test alone (dropped after)."""
    with scratch_database(PG_URL, "flowstate_t") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Return an empty database of this test alone: a SQLite file or a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    yield request.getfixturevalue("fresh_pg_url")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return a database URL: a SQLite file in tmp_path, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'flows.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """Return an engine on ``db_url`` with the tables created, pooled for 16 parallel workers."""
    engine = create_engine(db_url, pool_size=18, max_overflow=0)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def make_app(db_url: str) -> Iterator[Callable[..., Flask]]:
    """Return a factory of host apps on ``db_url`` with tables created; cleaned up after."""
    made: list[tuple[Flask, SQLAlchemy]] = []

    def factory(**config: Any) -> Flask:
        app = Flask("flowstate_test_host")
        app.config.update(
            TESTING=True,
            SECRET_KEY="test",
            SQLALCHEMY_DATABASE_URI=db_url,
            FLOWSTATE_ADMIN=False,
        )
        app.config.update(config)
        app.jinja_env.undefined = StrictUndefined
        db = SQLAlchemy(app)
        FlowState(app, db=db)
        with app.app_context():
            metadata.drop_all(db.engine)
            metadata.create_all(db.engine)
        made.append((app, db))
        return app

    yield factory
    for app, db in made:
        with app.app_context():
            db.session.remove()
            if db.engine.dialect.name == "postgresql":
                metadata.drop_all(db.engine)
            db.engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Iterator[Flask]:
    """Return a host app with an app context pushed."""
    app = make_app()
    with app.app_context():
        yield app


@pytest.fixture
def db(app: Flask) -> SQLAlchemy:
    """Return the app's Flask-SQLAlchemy object."""
    ext: SQLAlchemy = app.extensions["sqlalchemy"]
    return ext


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Return a test client of the app."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """Return a CLI runner of the app."""
    return app.test_cli_runner()
