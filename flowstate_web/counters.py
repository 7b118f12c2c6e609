"""Per-state flow counts kept exact by database triggers, so the admin never scans flows.

``flowstate_state_counts`` holds, per (type, state, slot), how many flows are there (``n``)
and how many of those are errored. ``slot = id % 16`` spreads one type's transitions over 16
rows, so workers moving different flows rarely wait on the same counter row. Triggers on
``flowstate_flows`` keep it up to date in the writer's own transaction (no Python on the
transition path, and rows written by plain SQL are counted too):

- PostgreSQL: one plpgsql function; INSERT and DELETE are statement-level triggers that add
  one upsert per key (a bulk insert or a prune batch costs a handful of upserts, not one per
  row); UPDATE is a row-level trigger that only fires when type, state, errored or id
  changed, and touches its two keys in a fixed order, so two transactions moving flows in
  opposite directions (A->B and B->A) cannot deadlock on the counter rows.
- SQLite (one writer at a time): three row-level triggers.
- Other dialects: no triggers; the admin counts with GROUP BY instead.

``metadata.create_all()`` installs the triggers (and fills the table from existing flows);
a host application's migration calls :func:`install_counters`. ``flask flowstate recount``
(:func:`recount`) rebuilds the table from the flows if it ever drifted.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, Engine, Table, event, text
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from alembic.operations import Operations

    from ._tx import AnySession

__all__ = ["SLOTS", "install_counters", "installed", "recount", "uninstall_counters"]

#: Counter rows per (type, state): ``slot = id % SLOTS``.
SLOTS: Final = 16
FUNCTION: Final = "flowstate_count_flows"
TRIGGERS: Final = (
    "flowstate_flows_count_insert",
    "flowstate_flows_count_delete",
    "flowstate_flows_count_update",
)
#: Dialects whose triggers keep the counters; elsewhere the admin scans.
SUPPORTED: Final = frozenset({"postgresql", "sqlite"})

# The SQL is spelled out (no string building): the names above, 16 slots.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION flowstate_count_flows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO flowstate_state_counts AS c (type, state, slot, n, errored)
    SELECT type, state, CAST(id % 16 AS integer), count(*), count(*) FILTER (WHERE errored)
    FROM flowstate_inserted GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (type, state, slot)
    DO UPDATE SET n = c.n + excluded.n, errored = c.errored + excluded.errored;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO flowstate_state_counts AS c (type, state, slot, n, errored)
    SELECT type, state, CAST(id % 16 AS integer), -count(*), -count(*) FILTER (WHERE errored)
    FROM flowstate_deleted GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (type, state, slot)
    DO UPDATE SET n = c.n + excluded.n, errored = c.errored + excluded.errored;
  ELSE
    -- UPDATE: both keys in one statement, in key order. Every transaction locks counter
    -- rows in that order, so A->B and B->A moves in parallel cannot deadlock.
    INSERT INTO flowstate_state_counts AS c (type, state, slot, n, errored)
    SELECT k.type, k.state, k.slot, sum(k.n), sum(k.errored)
    FROM (VALUES
      (OLD.type, OLD.state, CAST(OLD.id % 16 AS integer), -1, -CAST(OLD.errored AS integer)),
      (NEW.type, NEW.state, CAST(NEW.id % 16 AS integer), 1, CAST(NEW.errored AS integer))
    ) AS k (type, state, slot, n, errored)
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (type, state, slot)
    DO UPDATE SET n = c.n + excluded.n, errored = c.errored + excluded.errored;
  END IF;
  RETURN NULL;
END
$$
"""

_INSTALL: Final[dict[str, tuple[str, ...]]] = {
    "postgresql": (
        _PG_FUNCTION,
        "CREATE TRIGGER flowstate_flows_count_insert AFTER INSERT ON flowstate_flows"
        " REFERENCING NEW TABLE AS flowstate_inserted"
        " FOR EACH STATEMENT EXECUTE FUNCTION flowstate_count_flows()",
        "CREATE TRIGGER flowstate_flows_count_delete AFTER DELETE ON flowstate_flows"
        " REFERENCING OLD TABLE AS flowstate_deleted"
        " FOR EACH STATEMENT EXECUTE FUNCTION flowstate_count_flows()",
        "CREATE TRIGGER flowstate_flows_count_update"
        " AFTER UPDATE OF type, state, errored, id ON flowstate_flows FOR EACH ROW"
        " WHEN (OLD.type IS DISTINCT FROM NEW.type OR OLD.state IS DISTINCT FROM NEW.state"
        " OR OLD.errored IS DISTINCT FROM NEW.errored OR OLD.id IS DISTINCT FROM NEW.id)"
        " EXECUTE FUNCTION flowstate_count_flows()",
    ),
    "sqlite": (
        """
CREATE TRIGGER flowstate_flows_count_insert AFTER INSERT ON flowstate_flows
BEGIN
  INSERT INTO flowstate_state_counts (type, state, slot, n, errored)
  VALUES (NEW.type, NEW.state, NEW.id % 16, 1, CASE WHEN NEW.errored THEN 1 ELSE 0 END)
  ON CONFLICT (type, state, slot)
  DO UPDATE SET n = n + excluded.n, errored = errored + excluded.errored;
END
""",
        """
CREATE TRIGGER flowstate_flows_count_delete AFTER DELETE ON flowstate_flows
BEGIN
  INSERT INTO flowstate_state_counts (type, state, slot, n, errored)
  VALUES (OLD.type, OLD.state, OLD.id % 16, -1, CASE WHEN OLD.errored THEN -1 ELSE 0 END)
  ON CONFLICT (type, state, slot)
  DO UPDATE SET n = n + excluded.n, errored = errored + excluded.errored;
END
""",
        # The engine's SQLite lock (``SET seq = seq``) names none of these columns: no fire.
        """
CREATE TRIGGER flowstate_flows_count_update
AFTER UPDATE OF type, state, errored, id ON flowstate_flows
WHEN OLD.type IS NOT NEW.type OR OLD.state IS NOT NEW.state
  OR OLD.errored IS NOT NEW.errored OR OLD.id IS NOT NEW.id
BEGIN
  INSERT INTO flowstate_state_counts (type, state, slot, n, errored)
  VALUES (OLD.type, OLD.state, OLD.id % 16, -1, CASE WHEN OLD.errored THEN -1 ELSE 0 END)
  ON CONFLICT (type, state, slot)
  DO UPDATE SET n = n + excluded.n, errored = errored + excluded.errored;
  INSERT INTO flowstate_state_counts (type, state, slot, n, errored)
  VALUES (NEW.type, NEW.state, NEW.id % 16, 1, CASE WHEN NEW.errored THEN 1 ELSE 0 END)
  ON CONFLICT (type, state, slot)
  DO UPDATE SET n = n + excluded.n, errored = errored + excluded.errored;
END
""",
    ),
}

_UNINSTALL: Final[dict[str, tuple[str, ...]]] = {
    "postgresql": (
        "DROP TRIGGER IF EXISTS flowstate_flows_count_insert ON flowstate_flows",
        "DROP TRIGGER IF EXISTS flowstate_flows_count_delete ON flowstate_flows",
        "DROP TRIGGER IF EXISTS flowstate_flows_count_update ON flowstate_flows",
        "DROP FUNCTION IF EXISTS flowstate_count_flows()",
    ),
    "sqlite": (
        "DROP TRIGGER IF EXISTS flowstate_flows_count_insert",
        "DROP TRIGGER IF EXISTS flowstate_flows_count_delete",
        "DROP TRIGGER IF EXISTS flowstate_flows_count_update",
    ),
}

#: Rebuild the counters from the flows (writers must be locked out meanwhile).
_REBUILD: Final = (
    "DELETE FROM flowstate_state_counts",
    "INSERT INTO flowstate_state_counts (type, state, slot, n, errored)"
    " SELECT type, state, id % 16, count(*), sum(CASE WHEN errored THEN 1 ELSE 0 END)"
    " FROM flowstate_flows GROUP BY type, state, id % 16",
)
#: Blocks every writer of flows (and so every trigger) until the transaction ends.
_LOCK_PG: Final = "LOCK TABLE flowstate_flows IN SHARE ROW EXCLUSIVE MODE"
_TOTAL: Final = "SELECT coalesce(sum(n), 0) FROM flowstate_state_counts"

_INSTALLED_SQL: Final[dict[str, str]] = {
    "postgresql": (
        "SELECT to_regclass('flowstate_state_counts') IS NOT NULL AND ("
        " SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('flowstate_flows')"
        " AND tgname IN ('flowstate_flows_count_insert', 'flowstate_flows_count_delete',"
        " 'flowstate_flows_count_update') AND tgenabled <> 'D') = 3"
    ),
    "sqlite": (
        "SELECT count(*) = 4 FROM sqlite_master"
        " WHERE (type = 'trigger' AND tbl_name = 'flowstate_flows'"
        " AND name IN ('flowstate_flows_count_insert', 'flowstate_flows_count_delete',"
        " 'flowstate_flows_count_update')) OR (type = 'table' AND name = 'flowstate_state_counts')"
    ),
}


def install_statements(dialect: str) -> tuple[str, ...]:
    """Return the SQL that installs the triggers and fills the counters on ``dialect``.

    Empty for a dialect without counters. Run them in one transaction: on PostgreSQL the
    first statement locks out writers of flows until the counters are filled.
    """
    if dialect not in SUPPORTED:
        return ()
    lock = (_LOCK_PG,) if dialect == "postgresql" else ()
    return (*lock, *_UNINSTALL[dialect], *_INSTALL[dialect], *_REBUILD)


def uninstall_statements(dialect: str) -> tuple[str, ...]:
    """Return the SQL that removes the triggers (and function) on ``dialect``."""
    return _UNINSTALL.get(dialect, ())


def install(connection: Connection) -> None:
    """Install the triggers on ``connection``'s database and count the existing flows."""
    for statement in install_statements(connection.dialect.name):
        connection.execute(text(statement))
    _forget(connection.engine)


def uninstall(connection: Connection) -> None:
    """Remove the triggers (the admin then counts by scanning)."""
    for statement in uninstall_statements(connection.dialect.name):
        connection.execute(text(statement))
    _forget(connection.engine)


def install_counters(op: Operations) -> None:
    """Install the counters from a migration: ``install_counters(op)`` in ``upgrade()``.

    Call it after the migration that creates ``flowstate_state_counts``; it also counts
    the flows already there.
    """
    for statement in install_statements(op.get_context().dialect.name):
        op.execute(statement)


def uninstall_counters(op: Operations) -> None:
    """Remove the counters' triggers from a migration (before dropping the table)."""
    for statement in uninstall_statements(op.get_context().dialect.name):
        op.execute(statement)


def installed(connection: Connection) -> bool:
    """Return whether the counter table and its triggers exist (and are enabled)."""
    sql = _INSTALLED_SQL.get(connection.dialect.name)
    return sql is not None and bool(connection.execute(text(sql)).scalar())


_READY: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def ready(session: Session) -> bool:
    """Return whether the admin may read counts from the counters (checked once per engine).

    Only a positive answer is remembered: once the counters are installed the admin uses
    them without a restart.
    """
    connection = _connection(session)
    engine = connection.engine
    if _READY.get(engine):
        return True
    ok = installed(connection)
    if ok:
        _READY[engine] = True
    return ok


def _connection(session: Session) -> Connection:
    from .models import flows

    return session.connection(bind_arguments={"clause": flows})


def _forget(engine: Engine) -> None:
    _READY.pop(engine, None)


def recount(session: AnySession | None = None) -> int:
    """Rebuild the counters from the flows under a lock; return how many flows were counted.

    Its own transaction unless the caller began one (the transaction rule of
    :mod:`flowstate_web._tx`); without ``session``, the Flask app's ``db.session``.
    Repairs counters that drifted (rows written while the triggers were missing).
    """
    from ._tx import caller_owns, resolve_session

    sess = resolve_session(session)
    owns = caller_owns(sess)
    try:
        connection = _connection(sess)
        if connection.dialect.name == "postgresql":
            connection.execute(text(_LOCK_PG))
        for statement in _REBUILD:
            connection.execute(text(statement))
        total = connection.execute(text(_TOTAL)).scalar()
    except BaseException:
        if not owns:
            sess.rollback()
        raise
    if not owns:
        sess.commit()
    return int(total or 0)


def attach(counts: Table, flows: Table) -> None:
    """Make ``create_all``/``drop_all`` of ``counts`` install/remove the triggers on ``flows``.

    Needed on every copy of the table (``Table.to_metadata`` copies no listeners).
    """
    counts.add_is_dependent_on(flows)  # created after flows, dropped before it
    if not event.contains(counts, "after_create", _after_create):
        event.listen(counts, "after_create", _after_create)
    if not event.contains(counts, "before_drop", _before_drop):
        event.listen(counts, "before_drop", _before_drop)


def _after_create(target: Table, connection: Connection, **kw: Any) -> None:
    install(connection)


def _before_drop(target: Table, connection: Connection, **kw: Any) -> None:
    uninstall(connection)
