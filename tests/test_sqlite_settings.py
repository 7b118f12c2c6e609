"""Host apps on SQLite: one warning at first use when WAL or a busy timeout is missing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event, text


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flowstate_web" and r.levelno == logging.WARNING and "SQLite" in r.getMessage()
    ]


def use(app: Flask, times: int = 3) -> None:
    db: SQLAlchemy = app.extensions["sqlalchemy"]
    with app.app_context():
        for _ in range(times):
            db.session.execute(text("select 1"))
            db.session.remove()


def test_plain_sqlite_is_warned_about_once(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture, db_url: str
) -> None:
    caplog.set_level(logging.WARNING, logger="flowstate_web")
    app = make_app()
    use(app)
    found = warnings_of(caplog)
    if db_url.startswith("sqlite"):
        assert len(found) == 1, found
        assert "no WAL" in found[0] and "journal_mode=delete" in found[0]
        assert "README" in found[0]
    else:
        assert found == []


def test_sqlite_with_wal_and_a_busy_timeout_is_quiet(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.WARNING, logger="flowstate_web")
    app = Flask("flowstate_test_wal")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'wal.db'}", FLOWSTATE_ADMIN=False
    )
    db = SQLAlchemy(app)
    with app.app_context():

        @event.listens_for(db.engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    from flowstate_web import FlowState

    FlowState(app, db=db)
    use(app)
    assert warnings_of(caplog) == []
    with app.app_context():
        db.engine.dispose()


def test_sqlite_without_a_busy_timeout_is_named(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.WARNING, logger="flowstate_web")
    app = Flask("flowstate_test_no_timeout")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'plain.db'}",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": 0}},
        FLOWSTATE_ADMIN=False,
    )
    db = SQLAlchemy(app)
    from flowstate_web import FlowState

    FlowState(app, db=db)
    use(app)
    (found,) = warnings_of(caplog)
    assert "has no busy timeout or WAL" in found and "busy_timeout=0 ms" in found
    with app.app_context():
        db.engine.dispose()
