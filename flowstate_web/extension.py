"""The Flask extension: ``FlowState(app, db=db)`` or ``FlowState(db=db).init_app(app)``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine, event

from . import counters
from .models import metadata, state_counts

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .queues import Queue

AccessCheck = Callable[[], bool]
ActorLoader = Callable[[], "str | None"]
DeniedHandler = Callable[[], ResponseReturnValue]
F = TypeVar("F", bound=Callable[..., Any])


class FlowState:
    """Connect the flow engine (and, optionally, its admin) to a Flask app.

    :param db: the host's ``flask_sqlalchemy.SQLAlchemy`` object; flows use ``db.session``,
        so they share the host's transactions. The engine's tables are copied into
        ``db.metadata`` so ``db.create_all()`` and ``flask db migrate`` see them.
    :param access: called on every admin request; return ``True`` to let it through.
        Without it every admin request is denied unless ``FLOWSTATE_PUBLIC`` is set.
    :param actor: returns who is acting (recorded in the history of admin retries).
    :param on_denied: the response for a denied request (default: a 403 page).
    :param queue: where transitions' hand-offs (``enqueue=``) go, e.g.
        ``HueyQueue(huey)`` or ``CeleryQueue(celery)`` (:mod:`flowstate_web.queues`).
        Without one, hand-offs wait in the outbox until a relay with a queue sends them.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: SQLAlchemy | None = None,
        access: AccessCheck | None = None,
        actor: ActorLoader | None = None,
        on_denied: DeniedHandler | None = None,
        queue: Queue | None = None,
    ) -> None:
        self.db = db
        self.queue = queue
        self.access = access
        self.actor = actor
        self.on_denied = on_denied
        if app is not None:
            self.init_app(app)

    def access_check(self, fn: F) -> F:
        """Register ``fn() -> bool`` as the admin's access check (usable as a decorator)."""
        self.access = fn
        return fn

    def actor_loader(self, fn: F) -> F:
        """Register ``fn() -> str | None`` naming the acting operator (usable as a decorator)."""
        self.actor = fn
        return fn

    def use_queue(self, queue: Queue, app: Flask) -> None:
        """Send hand-offs to ``queue`` from now on (jobs run in ``app``'s context)."""
        queue.bind(app)
        self.queue = queue

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
        app.config.setdefault("FLOWSTATE_OUTBOX_RELAY_DELAY", 30.0)
        if self.queue is not None:
            self.queue.bind(app)
        if app.config["FLOWSTATE_REGISTER_TABLES"]:
            include_tables(self.db.metadata)
        self._init_admin(app)
        if app.config.setdefault("FLOWSTATE_METRICS", False):
            from . import metrics

            metrics.init_app(app)
        app.extensions["flowstate"] = self
        _watch_sqlite_settings(app, self.db)
        from .cli import flowstate_cli

        if "flowstate" not in app.cli.commands:
            app.cli.add_command(flowstate_cli)

    def _init_admin(self, app: Flask) -> None:
        app.config.setdefault("FLOWSTATE_ADMIN", True)
        if not app.config["FLOWSTATE_ADMIN"]:
            return  # the admin package (views, templates, diagrams) is never imported
        from .admin import create_blueprint
        from .admin.settings import DEFAULTS, Settings

        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        settings = Settings.from_config(app.config)
        if settings.enabled:
            app.register_blueprint(
                create_blueprint(settings), url_prefix=settings.url_prefix or None
            )


log = logging.getLogger("flowstate_web")


def _watch_sqlite_settings(app: Flask, db: SQLAlchemy) -> None:
    """Log once per SQLite engine, at its first use, if it lacks WAL or a busy timeout.

    A log record, not a ``warnings`` warning: a development app on plain SQLite works, it
    only queues writers worse. Checked at first checkout, after the host's own ``connect``
    listeners (which usually set the pragmas) have run.
    """
    try:
        with app.app_context():
            engines: list[Engine] = list(db.engines.values())
    except Exception:  # db not initialised on this app yet: nothing to look at
        return
    for engine in engines:
        if engine.dialect.name == "sqlite":
            event.listen(engine, "checkout", _sqlite_check(str(engine.url)), once=True)


def _sqlite_check(url: str) -> Callable[[Any, Any, Any], None]:
    def check(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        cur = dbapi_connection.cursor()
        try:
            timeout = cur.execute("PRAGMA busy_timeout").fetchone()[0]
            journal = str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        finally:
            cur.close()
        missing = [
            *(["busy timeout"] if not timeout else []),
            *(["WAL"] if journal not in ("wal", "memory") else []),
        ]
        if missing:
            log.warning(
                "flowstate: the SQLite database %s has no %s (journal_mode=%s,"
                " busy_timeout=%s ms): concurrent writers may fail with 'database is"
                " locked'; set PRAGMA journal_mode=WAL and busy_timeout in a 'connect'"
                " listener (README, 'Using it in your Flask app')",
                url,
                " or ".join(missing),
                journal,
                timeout,
            )

    return check


def include_tables(target: Any) -> None:
    """Copy the engine's tables into ``target`` (a ``MetaData``) unless already there.

    The copy of the counter table gets the listeners that install its triggers on
    ``create_all`` (``Table.to_metadata`` copies no event listeners).
    """
    for table in metadata.sorted_tables:
        if table.key not in target.tables:
            table.to_metadata(target)
    counters.attach(target.tables[state_counts.key], target.tables["flowstate_flows"])
