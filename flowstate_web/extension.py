"""The Flask extension: ``FlowState(app, db=db)`` or ``FlowState(db=db).init_app(app)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask

from .models import metadata

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


class FlowState:
    """Connect the flow engine (and, optionally, its admin) to a Flask app.

    :param db: the host's ``flask_sqlalchemy.SQLAlchemy`` object; flows use ``db.session``,
        so they share the host's transactions. The engine's tables are copied into
        ``db.metadata`` so ``db.create_all()`` and ``flask db migrate`` see them.
    """

    def __init__(self, app: Flask | None = None, *, db: SQLAlchemy | None = None) -> None:
        self.db = db
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register on ``app``; a second registration raises ``RuntimeError``."""
        if "flowstate" in app.extensions:
            raise RuntimeError("FlowState is already registered on this app")
        if self.db is None:
            self.db = app.extensions.get("sqlalchemy")
        if self.db is None:
            raise RuntimeError(
                "FlowState needs Flask-SQLAlchemy: pass FlowState(app, db=db)"
                " or call db.init_app(app) first"
            )
        app.config.setdefault("FLOWSTATE_REGISTER_TABLES", True)
        if app.config["FLOWSTATE_REGISTER_TABLES"]:
            include_tables(self.db.metadata)
        app.extensions["flowstate"] = self
        from .cli import flowstate_cli

        if "flowstate" not in app.cli.commands:
            app.cli.add_command(flowstate_cli)


def include_tables(target: Any) -> None:
    """Copy the engine's tables into ``target`` (a ``MetaData``) unless already there."""
    for table in metadata.sorted_tables:
        if table.key not in target.tables:
            table.to_metadata(target)
