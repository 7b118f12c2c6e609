"""A small host application: its own models and migrations, with flowstate-web inside.

Used by ``tests/test_host_app_migrations.py`` through the real ``flask db`` CLI:
``HOST_APP_DATABASE_URL`` and ``HOST_APP_MIGRATIONS`` say where its database and its own
migrations directory (made by ``flask db init`` in a temporary folder) are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flowstate_web import FlowState


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Customer(db.Model):  # type: ignore[name-defined, misc]
    """The host's own table."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="new")


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the host app (database and migrations directory from the environment)."""
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get("HOST_APP_DATABASE_URL", "sqlite://"),
        FLOWSTATE_ADMIN=False,
        SECRET_KEY="host-app-test",
    )
    app.config.update(test_config or {})
    db.init_app(app)
    FlowState(app, db=db)
    Migrate(app, db, directory=os.environ.get("HOST_APP_MIGRATIONS", "migrations"))
    from . import flows  # noqa: F401 - registers the host's flow type

    return app
