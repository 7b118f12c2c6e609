"""The hot path's statements, run on the DBAPI connection of the Session's own transaction.

On SQLite a statement takes about 15 µs in the driver and several times that in
SQLAlchemy's execution layer (execution context, events, result objects), so a transition
run through ``Session.execute`` costs ~4x the bare driver. Here the same statements go
straight to the driver cursor of the connection the Session's transaction holds:

- **Same transaction.** :func:`on` gets the connection from ``Session.connection()``, which
  begins the Session's transaction as ``Session.execute`` would; the Session still commits
  or rolls back, so the transaction rule and the after-commit callbacks are untouched.
- **Same SQL, same values.** Each statement is compiled once per dialect by SQLAlchemy from
  the Core statements below, and its parameters go through the bind processors of that
  compiled statement; read rows go through the columns' result processors. What is stored
  and read back is byte for byte what ``Session.execute`` would store and read.
- **Same errors.** Driver errors go through SQLAlchemy's own handler, so callers still get
  ``sqlalchemy.exc.IntegrityError`` / ``OperationalError`` and dropped connections are
  invalidated as usual.

Only sqlite3 and psycopg are taken this way; any other driver, a connection whose statements
someone listens to (``echo``, ``before_cursor_execute``) or a ``schema_translate_map`` runs
the same Core statements through ``Session.execute`` instead (:class:`Core`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sqlalchemy import Connection, Dialect, bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from .models import artefacts, flows, transitions

# The statements, built once: constructing Core statements per call (and hashing them into
# a compiled-cache key) cost more than the database work. Values are bound per execution.
INSERT_FLOW = insert(flows).returning(*flows.c)
SELECT_FLOW = select(flows).where(flows.c.id == bindparam("flow_id"))
SELECT_FLOW_OF_TYPE = SELECT_FLOW.where(flows.c.type == bindparam("type_name"))
#: SQLite has no row locks: a no-op UPDATE takes the database write lock first, so
#: concurrent writers queue on busy_timeout instead of failing to upgrade a read lock.
LOCK_SQLITE = (
    update(flows)
    .where(flows.c.id == bindparam("flow_id"))
    .values(seq=flows.c.seq)
    .returning(*flows.c)
)
LOCK_FOR_UPDATE = SELECT_FLOW.with_for_update()
INSERT_TRANSITION = insert(transitions).returning(transitions.c.id)
#: Executed with the changed columns as parameters (they become the SET clause) + flow_id.
UPDATE_FLOW = update(flows).where(flows.c.id == bindparam("flow_id"))
INSERT_ARTEFACT = insert(artefacts)

#: (dialect name, driver) pairs whose DBAPI connection the hot path uses directly.
DRIVERS = frozenset({("sqlite", "pysqlite"), ("postgresql", "psycopg")})

Params = Mapping[str, Any]


class Statements(Protocol):
    """The hot path's statements on one session's transaction; rows come back as mappings."""

    def lock(self, flow_id: int) -> Mapping[str, Any] | None: ...
    def select_flow(self, flow_id: int, type_name: str | None) -> Mapping[str, Any] | None: ...
    def insert_flow(self, values: Params) -> Mapping[str, Any]: ...
    def insert_transition(self, values: Params) -> int: ...
    def update_flow(self, values: Params) -> None: ...
    def insert_artefact(self, values: Params) -> None: ...


def on(sess: Session) -> Statements:
    """Return the hot path's statements on ``sess``'s transaction (beginning it if needed)."""
    conn = sess.connection(bind_arguments={"clause": flows})
    dialect = conn.dialect
    if (
        (dialect.name, dialect.driver) not in DRIVERS
        or conn._echo  # SQL logging on: let SQLAlchemy log every statement
        or ((conn._has_events or conn.engine._has_events) and _watched(conn))
        or conn.get_execution_options().get("schema_translate_map")
    ):
        return Core(sess, dialect.name == "sqlite")
    compiled = _COMPILED.get(dialect)
    if compiled is None:
        compiled = _COMPILED[dialect] = _Compiled(dialect)
    return DBAPI(conn, compiled)


def _watched(conn: Connection) -> bool:
    """Return whether someone listens to statements on ``conn`` (query recorders, tracing)."""
    d = conn.dispatch
    return bool(
        d.before_execute or d.after_execute or d.before_cursor_execute or d.after_cursor_execute
    )


class Core:
    """The statements through ``Session.execute``: every dialect, every event, as before."""

    __slots__ = ("_lock", "_sess")

    def __init__(self, sess: Session, sqlite: bool) -> None:
        self._sess = sess
        self._lock = LOCK_SQLITE if sqlite else LOCK_FOR_UPDATE

    def _one(self, stmt: Executable, values: Params) -> Mapping[str, Any] | None:
        row = self._sess.execute(stmt, values).first()
        return None if row is None else row._mapping  # type: ignore[return-value]

    def lock(self, flow_id: int) -> Mapping[str, Any] | None:
        return self._one(self._lock, {"flow_id": flow_id})

    def select_flow(self, flow_id: int, type_name: str | None) -> Mapping[str, Any] | None:
        if type_name is None:
            return self._one(SELECT_FLOW, {"flow_id": flow_id})
        return self._one(SELECT_FLOW_OF_TYPE, {"flow_id": flow_id, "type_name": type_name})

    def insert_flow(self, values: Params) -> Mapping[str, Any]:
        return self._sess.execute(INSERT_FLOW, values).one()._mapping  # type: ignore[return-value]

    def insert_transition(self, values: Params) -> int:
        return self._sess.execute(INSERT_TRANSITION, values).scalar_one()  # type: ignore[no-any-return]

    def update_flow(self, values: Params) -> None:
        self._sess.execute(UPDATE_FLOW, values)

    def insert_artefact(self, values: Params) -> None:
        self._sess.execute(INSERT_ARTEFACT, values)


class _Statement:
    """One statement compiled for one dialect: its SQL and how to bind its parameters."""

    __slots__ = ("_keys", "_positional", "_processors", "sql")

    def __init__(self, stmt: Any, dialect: Dialect, keys: list[str]) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=keys)
        self.sql: str = compiled.string
        self._positional = dialect.positional
        #: Parameter order: positional (sqlite3's ``?``) or by name (psycopg's ``%(name)s``).
        self._keys: list[str] = compiled.positiontup if self._positional else list(compiled.binds)
        # The converters Session.execute would apply: SQLite DATETIME to text, JSON to text
        # (or psycopg's Json), booleans to 0/1. By position or by name, as bound.
        # Each with what it makes of None, computed once (a transition's ``meta`` is usually
        # None, which JSON serializes to ``'null'`` on every call otherwise).
        procs = compiled._bind_processors
        self._processors: list[tuple[Any, Callable[[Any], Any], Any]] = [
            (i if self._positional else key, procs[key], _of_none(procs[key]))
            for i, key in enumerate(self._keys)
            if key in procs
        ]

    def params(self, values: Params) -> list[Any] | dict[str, Any]:
        params: Any = [values[k] for k in self._keys] if self._positional else dict(values)
        for at, process, null in self._processors:
            value = params[at]
            params[at] = process(value) if value is not None or null is _NO_SHORTCUT else null
        return params  # type: ignore[no-any-return]


_NO_SHORTCUT = object()


def _of_none(process: Callable[[Any], Any]) -> Any:
    """Return ``process(None)`` (or a marker to call it each time if it raises)."""
    try:
        return process(None)
    except Exception:
        return _NO_SHORTCUT


class _Compiled:
    """Everything the DBAPI path needs for one dialect, compiled on first use."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.lock = LOCK_SQLITE if dialect.name == "sqlite" else LOCK_FOR_UPDATE
        #: Keyed like SQLAlchemy's compiled cache: the statement and the parameter names
        #: (an INSERT's columns and an UPDATE's SET clause follow the parameters given).
        self._statements: dict[tuple[Executable, tuple[str, ...]], _Statement] = {}
        #: A flows row's columns, and how they are read back as SQLAlchemy would (SQLite:
        #: text to datetime, JSON text to objects, 0/1 to bool; psycopg does it all itself).
        self.flow_columns = [c.key for c in flows.c]
        self.flow_processors = [
            (c.key, process)
            for c in flows.c
            if (process := dialect.type_descriptor(c.type).result_processor(dialect, None))
        ]

    def __call__(self, stmt: Executable, keys: tuple[str, ...]) -> _Statement:
        compiled = self._statements.get((stmt, keys))
        if compiled is None:
            compiled = _Statement(stmt, self.dialect, list(keys))
            self._statements[stmt, keys] = compiled
        return compiled


_COMPILED: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()


class DBAPI:
    """The statements on the driver cursor of the Session's connection (sqlite3, psycopg)."""

    __slots__ = ("_c", "_conn", "_dbapi")

    def __init__(self, conn: Connection, compiled: _Compiled) -> None:
        self._conn = conn
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None  # a connection in a transaction is checked out
        self._dbapi = dbapi
        self._c = compiled

    def _run(self, stmt: Executable, values: Params) -> tuple[Any, ...] | None:
        """Execute ``stmt`` and return its first row (all a hot-path statement returns)."""
        compiled = self._c(stmt, tuple(values))
        params = compiled.params(values)
        cursor = self._dbapi.cursor()
        try:
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone() if cursor.description else None
        except BaseException as exc:
            # SQLAlchemy wraps it (IntegrityError, OperationalError...) and invalidates
            # the connection on a disconnect, exactly as for its own statements.
            self._conn._handle_dbapi_exception(exc, compiled.sql, params, cursor, None)
            raise  # not reached: the handler always raises
        finally:
            cursor.close()
        return row

    def _flow(self, row: tuple[Any, ...] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        flow = dict(zip(self._c.flow_columns, row, strict=True))
        for key, process in self._c.flow_processors:
            flow[key] = process(flow[key])
        return flow

    def lock(self, flow_id: int) -> Mapping[str, Any] | None:
        return self._flow(self._run(self._c.lock, {"flow_id": flow_id}))

    def select_flow(self, flow_id: int, type_name: str | None) -> Mapping[str, Any] | None:
        if type_name is None:
            return self._flow(self._run(SELECT_FLOW, {"flow_id": flow_id}))
        values = {"flow_id": flow_id, "type_name": type_name}
        return self._flow(self._run(SELECT_FLOW_OF_TYPE, values))

    def insert_flow(self, values: Params) -> Mapping[str, Any]:
        row = self._flow(self._run(INSERT_FLOW, values))
        assert row is not None  # INSERT ... RETURNING always returns the row
        return row

    def insert_transition(self, values: Params) -> int:
        row = self._run(INSERT_TRANSITION, values)
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    def update_flow(self, values: Params) -> None:
        self._run(UPDATE_FLOW, values)

    def insert_artefact(self, values: Params) -> None:
        self._run(INSERT_ARTEFACT, values)
