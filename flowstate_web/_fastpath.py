"""The hot path's statements, run on the DBAPI connection of the Session's own transaction.

On SQLite a statement takes about 6 µs in the driver and several times that in
SQLAlchemy's execution layer (execution context, events, result objects), so a transition
run through ``Session.execute`` costs several times the bare driver. Here the same
statements go straight to a cursor of the connection the Session's transaction holds,
using SQLAlchemy's public API only (the test suite greps this file for private names):

- **Same transaction.** :func:`on` gets the connection from ``Session.connection()``, which
  begins the Session's transaction as ``Session.execute`` would; the driver connection is
  ``Connection.connection.driver_connection``. The Session still commits or rolls back, so
  the transaction rule and the after-commit callbacks are untouched.
- **Same SQL, same values.** Each statement is compiled once per dialect by SQLAlchemy
  (``ClauseElement.compile``) from the Core statements below, built from the tables, so a
  column added to a table needs no change here. Parameters are ordered by the compiled
  statement (``SQLCompiler.positiontup`` / ``binds``) and converted by the bind processors
  of their types (``TypeEngine.dialect_impl(dialect).bind_processor(dialect)``); rows read
  back go through the columns' ``result_processor``. What is stored and read back is what
  ``Session.execute`` would store and read (tested side by side).
- **Same errors.** A driver error becomes SQLAlchemy's exception
  (``sqlalchemy.exc.DBAPIError.instance``: ``IntegrityError``, ``OperationalError``...). If
  the dialect says the connection is gone (``Dialect.is_disconnect``), the connection is
  invalidated (``Connection.invalidate``) and the engine's pool is replaced
  (``Engine.dispose``), as SQLAlchemy invalidates the whole pool on a disconnect: the next
  transaction gets a new connection, so a database restart costs one failed transaction.

- **Fewer round trips.** On PostgreSQL a transition's writes (its history row, the flow
  row, its artefact) are one statement (:func:`write_statement`, data-modifying ``WITH``);
  the counter triggers fire as for separate statements. What :func:`on` finds (the
  Session's connection, the driver connection, psycopg's cursor) is kept for the
  transaction, and a flows row read again unchanged (``get``, then the transition's locked
  re-read) is not converted twice.

Only sqlite3 and psycopg are taken this way. Any other driver, or a connection whose
statements someone watches -- ``echo`` or the ``sqlalchemy.engine`` logger at INFO, a
``before/after_execute``, ``before/after_cursor_execute`` or ``handle_error`` listener on the
engine or the ``Engine`` class (query recorders, tracing, custom disconnect rules), a
``schema_translate_map`` -- runs the same
Core statements through ``Session.execute`` instead (:class:`Core`), and so sees and
handles every statement as usual.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Protocol

from sqlalchemy import Connection, Dialect, Table, bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql import Executable

from .models import artefacts, flows, transitions

# The statements, built once: constructing Core statements per call (and hashing them into
# a compiled-cache key) cost more than the database work. Values are bound per execution.
INSERT_FLOW = insert(flows).returning(*flows.c)
#: By primary key only; the caller checks the type in Python (a ``type = ?`` term let an
#: unanalyzed PostgreSQL table plan the lookup on a ``(type, ...)`` index).
SELECT_FLOW = select(flows).where(flows.c.id == bindparam("flow_id"))
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


def write_statement(history: tuple[str, ...], flow: tuple[str, ...], artefact: bool) -> Executable:
    """Return one statement writing a transition (PostgreSQL): history, flow and artefact.

    ``WITH h AS (INSERT INTO flowstate_transitions ... RETURNING id), f AS (UPDATE
    flowstate_flows SET ... WHERE id = ...) [, a AS (INSERT INTO flowstate_artefacts ...
    SELECT ... FROM h)] SELECT id FROM h``: the statements of the separate-statement path,
    in one round trip. Parameters: ``h_<column>`` (history), ``f_<column>`` (the flow's
    SET clause, ``f_flow_id`` its key) and ``a_<column>`` (the artefact).
    """
    key = (history, flow, artefact)
    stmt = _WRITES.get(key)
    if stmt is not None:
        return stmt
    tc, fc, ac = transitions.c, flows.c, artefacts.c
    h = (
        insert(transitions)
        .values({k: bindparam(f"h_{k}", type_=tc[k].type) for k in history})
        .returning(tc.id)
        .cte("flowstate_h")
    )
    f = (
        update(flows)
        .where(fc.id == bindparam("f_flow_id", type_=fc.id.type))
        .values({k: bindparam(f"f_{k}", type_=fc[k].type) for k in flow if k != "flow_id"})
        .cte("flowstate_f")
    )
    stmt = select(h.c.id).add_cte(f)
    if artefact:
        cols = ("flow_id", "name", "payload", "created_at")
        a = (
            insert(artefacts)
            .from_select(
                [*cols, "transition_id"],
                select(*(bindparam(f"a_{k}", type_=ac[k].type) for k in cols), h.c.id),
            )
            .cte("flowstate_a")
        )
        stmt = stmt.add_cte(a)
    _WRITES[key] = stmt
    return stmt


_WRITES: dict[tuple[tuple[str, ...], tuple[str, ...], bool], Executable] = {}

#: (dialect name, driver) pairs whose DBAPI connection the hot path uses directly.
DRIVERS = frozenset({("sqlite", "pysqlite"), ("postgresql", "psycopg")})

#: The logger SQLAlchemy logs statements to (``echo=True`` or logging configured at INFO).
SQL_LOG = logging.getLogger("sqlalchemy.engine.Engine")

Params = Mapping[str, Any]


class Statements(Protocol):
    """The hot path's statements on one session's transaction; rows come back as mappings."""

    def lock(self, flow_id: int) -> Mapping[str, Any] | None: ...
    def select_flow(self, flow_id: int) -> Mapping[str, Any] | None: ...
    def insert_flow(self, values: Params) -> Mapping[str, Any]: ...
    def insert_transition(self, values: Params) -> int: ...
    def update_flow(self, values: Params) -> None: ...
    def write(self, history: Params, flow: Params, artefact: Params | None) -> int: ...
    def insert(self, table: Table, values: Params) -> None: ...


def on(sess: Session) -> Statements:
    """Return the hot path's statements on ``sess``'s transaction (beginning it if needed).

    Kept for the transaction (a ``get`` and the transition after it share it): the
    Session's connection and, on the DBAPI path, the driver connection and, on psycopg,
    one cursor. Whether someone watches statements is checked on every call.
    """
    # Per innermost transaction: the Session begins a savepoint when its connection is
    # first asked for inside ``begin_nested()``, so a new savepoint must ask again.
    trans = sess.get_nested_transaction() or sess.get_transaction()
    found = None if trans is None else _ON.get(trans)
    if found is not None and found.usable():
        conn = found.conn  # the Session's connection for this transaction, as before
        watching = watched(conn)  # a listener may have been added since
        if isinstance(found, Core) or not watching:
            return found
    else:
        conn = sess.connection(bind_arguments={"clause": flows})
        watching = watched(conn)
    dialect = conn.dialect
    db: Core | DBAPI
    if (dialect.name, dialect.driver) not in DRIVERS or watching:
        db = Core(sess, conn, dialect.name == "sqlite")
    else:
        compiled = _COMPILED.get(dialect)
        if compiled is None:
            compiled = _COMPILED[dialect] = _Compiled(dialect)
        db = DBAPI(conn, compiled)
    trans = sess.get_nested_transaction() or sess.get_transaction()
    if trans is not None:
        _ON[trans] = db
    return db


#: What :func:`on` decided for each live transaction of a Session.
_ON: weakref.WeakKeyDictionary[SessionTransaction, Core | DBAPI] = weakref.WeakKeyDictionary()


def watched(conn: Connection) -> bool:
    """Return whether someone logs, traces or rewrites the statements run on ``conn``.

    Listeners are looked up on the engine (``Engine.dispatch``, the documented attribute of
    every event target; an event's listener collection is true when it has a listener),
    which also holds those registered on the ``Engine`` class: that is where query
    recorders and tracers register. (The joined per-connection collections would see
    listeners registered on one ``Connection`` object too, but building them for every new
    connection cost 6 µs of CPU per transaction.)
    """
    engine = conn.engine
    d = engine.dispatch
    return bool(
        engine.echo
        or SQL_LOG.isEnabledFor(logging.INFO)
        or d.before_execute
        or d.after_execute
        or d.before_cursor_execute
        or d.after_cursor_execute
        or conn.dialect.dispatch.handle_error
        or conn.get_execution_options().get("schema_translate_map")
    )


def _insert(table: Table) -> Executable:
    stmt = _INSERTS.get(table)
    if stmt is None:
        stmt = _INSERTS[table] = insert(table)
    return stmt


_INSERTS: dict[Table, Executable] = {artefacts: INSERT_ARTEFACT}


class Core:
    """The statements through ``Session.execute``: every dialect, every event, as before."""

    __slots__ = ("conn", "lock_stmt", "sess")

    def __init__(self, sess: Session, conn: Connection, sqlite: bool) -> None:
        self.sess = sess
        self.conn = conn
        self.lock_stmt = LOCK_SQLITE if sqlite else LOCK_FOR_UPDATE

    def usable(self) -> bool:
        return not (self.conn.closed or self.conn.invalidated)

    def _one(self, stmt: Executable, values: Params) -> Mapping[str, Any] | None:
        return self.sess.execute(stmt, values).mappings().first()  # type: ignore[return-value]

    def lock(self, flow_id: int) -> Mapping[str, Any] | None:
        return self._one(self.lock_stmt, {"flow_id": flow_id})

    def select_flow(self, flow_id: int) -> Mapping[str, Any] | None:
        return self._one(SELECT_FLOW, {"flow_id": flow_id})

    def insert_flow(self, values: Params) -> Mapping[str, Any]:
        return self.sess.execute(INSERT_FLOW, values).mappings().one()  # type: ignore[return-value]

    def insert_transition(self, values: Params) -> int:
        return self.sess.execute(INSERT_TRANSITION, values).scalar_one()  # type: ignore[no-any-return]

    def update_flow(self, values: Params) -> None:
        self.sess.execute(UPDATE_FLOW, values)

    def write(self, history: Params, flow: Params, artefact: Params | None) -> int:
        tid = self.insert_transition(history)
        self.update_flow(flow)
        if artefact is not None:
            self.sess.execute(INSERT_ARTEFACT, {**artefact, "transition_id": tid})
        return tid

    def insert(self, table: Table, values: Params) -> None:
        self.sess.execute(_insert(table), values)


class CompiledStatement:
    """One statement compiled for one dialect: its SQL and how to bind its parameters."""

    __slots__ = ("keys", "positional", "processors", "sql")

    def __init__(self, stmt: Any, dialect: Dialect, keys: list[str]) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=keys)
        if compiled.escaped_bind_names:  # pragma: no cover - the tables' names are plain
            raise ValueError(f"statement needs escaped parameter names: {compiled.string}")
        self.sql: str = compiled.string
        self.positional: bool = dialect.positional
        #: Parameter order: positional (sqlite3's ``?``) or by name (psycopg's ``%(name)s``).
        self.keys: list[str] = (
            list(compiled.positiontup) if self.positional else list(compiled.binds)
        )
        # The converters Session.execute would apply: SQLite DATETIME to text, JSON to text
        # (or psycopg's Json), booleans to 0/1. By position or by name, as bound. Each with
        # what it makes of None, computed once (a transition's ``meta`` is usually None,
        # which JSON serializes to ``'null'`` on every call otherwise).
        self.processors: list[tuple[Any, Callable[[Any], Any], Any]] = []
        for i, key in enumerate(self.keys):
            process = compiled.binds[key].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                at = i if self.positional else key
                self.processors.append((at, process, _of_none(process)))

    def params(self, values: Params) -> list[Any] | dict[str, Any]:
        params: Any = [values[k] for k in self.keys] if self.positional else dict(values)
        for at, process, null in self.processors:
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
        self.error: type[Exception] = dialect.loaded_dbapi.Error
        self.lock = LOCK_SQLITE if dialect.name == "sqlite" else LOCK_FOR_UPDATE
        #: PostgreSQL: history, flow and artefact written by one statement (DML in WITH);
        #: SQLite has no DML in WITH, and its statements cost no round trip.
        self.one_statement_write = dialect.name == "postgresql"
        self.keep_cursor = dialect.driver == "psycopg"
        #: Keyed like SQLAlchemy's compiled cache: the statement and the parameter names
        #: (an INSERT's columns and an UPDATE's SET clause follow the parameters given).
        self.statements: dict[tuple[Executable, tuple[str, ...]], CompiledStatement] = {}
        #: A flows row's columns, and how they are read back as SQLAlchemy would (SQLite:
        #: text to datetime, JSON text to objects, 0/1 to bool; psycopg does it all itself).
        self.flow_columns = [c.key for c in flows.c]
        self.flow_processors = [
            (c.key, process)
            for c in flows.c
            if (process := c.type.dialect_impl(dialect).result_processor(dialect, None))
        ]

    def __call__(self, stmt: Executable, keys: tuple[str, ...]) -> CompiledStatement:
        compiled = self.statements.get((stmt, keys))
        if compiled is None:
            compiled = CompiledStatement(stmt, self.dialect, list(keys))
            self.statements[stmt, keys] = compiled
        return compiled


_COMPILED: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()


def compiled_sql(dialect: Dialect) -> set[str]:
    """Return the SQL text of every statement the DBAPI path has compiled for ``dialect``."""
    found = _COMPILED.get(dialect)
    return set() if found is None else {s.sql for s in found.statements.values()}


class DBAPI:
    """The statements on a driver cursor of the Session's connection (sqlite3, psycopg)."""

    __slots__ = ("c", "conn", "cursor", "driver", "last")

    def __init__(self, conn: Connection, compiled: _Compiled) -> None:
        self.conn = conn
        self.driver: Any = conn.connection.driver_connection
        self.c = compiled
        #: psycopg: one cursor for the transaction (making one per statement cost more than
        #: some statements). sqlite3: a cursor per statement, closed at once, so that no
        #: statement is left unfinished when the transaction commits.
        self.cursor: Any = None
        #: The flows row read last (as read, and as returned): see :meth:`_flow`.
        self.last: tuple[tuple[Any, ...], Mapping[str, Any]] | None = None

    def usable(self) -> bool:
        return not (self.conn.closed or self.conn.invalidated)

    def _run(self, stmt: Executable, values: Params, rows: bool = True) -> tuple[Any, ...] | None:
        """Execute ``stmt`` and return its first row (all a hot-path statement returns).

        ``rows``: whether the statement returns rows (known here; asking the cursor for its
        ``description`` makes psycopg build a column object per column, every time).
        """
        compiled = self.c(stmt, tuple(values))
        try:
            params = compiled.params(values)
        except Exception as exc:  # a value its type cannot bind: StatementError, as SQLAlchemy
            _raise(self.conn, exc, compiled.sql, values, None)
        keep = self.c.keep_cursor
        cursor = self.cursor if keep else None
        if cursor is None:
            cursor = self.driver.cursor()
        try:
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone() if rows else None
        except self.c.error as exc:
            self._close(cursor)
            _raise(self.conn, exc, compiled.sql, params, cursor)
        except BaseException as exc:
            self._close(cursor)
            if not isinstance(exc, Exception):
                # Interrupted mid-statement (KeyboardInterrupt, cancellation): the
                # connection's state is unknown, so it is not reused (as SQLAlchemy does).
                self.conn.invalidate(exc)
            raise
        if keep:
            self.cursor = cursor
        else:
            self._close(cursor)
        return row

    def _close(self, cursor: Any) -> None:
        self.cursor = None
        try:  # noqa: SIM105 - contextlib.suppress costs more than the close on the hot path
            cursor.close()
        except self.c.error:  # e.g. the connection is already closed
            pass

    def _flow(self, row: tuple[Any, ...] | None) -> Mapping[str, Any] | None:
        """Return a flows row as a mapping, converted as SQLAlchemy would.

        The row read last in this transaction is remembered: reading the very same values
        again (``get``, then the transition's locked re-read) returns the same mapping
        object without converting anything, which tells the caller nothing changed.
        """
        if row is None:
            return None
        last = self.last
        if last is not None and last[0] == row:
            return last[1]
        flow = dict(zip(self.c.flow_columns, row, strict=True))
        for key, process in self.c.flow_processors:
            flow[key] = process(flow[key])
        self.last = (row, flow)
        return flow

    def lock(self, flow_id: int) -> Mapping[str, Any] | None:
        return self._flow(self._run(self.c.lock, {"flow_id": flow_id}))

    def select_flow(self, flow_id: int) -> Mapping[str, Any] | None:
        return self._flow(self._run(SELECT_FLOW, {"flow_id": flow_id}))

    def insert_flow(self, values: Params) -> Mapping[str, Any]:
        row = self._flow(self._run(INSERT_FLOW, values))
        assert row is not None  # INSERT ... RETURNING always returns the row
        return row

    def insert_transition(self, values: Params) -> int:
        row = self._run(INSERT_TRANSITION, values)
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    def update_flow(self, values: Params) -> None:
        self._run(UPDATE_FLOW, values, rows=False)

    def write(self, history: Params, flow: Params, artefact: Params | None) -> int:
        if not self.c.one_statement_write:
            tid = self.insert_transition(history)
            self.update_flow(flow)
            if artefact is not None:
                self._run(INSERT_ARTEFACT, {**artefact, "transition_id": tid}, rows=False)
            return tid
        stmt = write_statement(tuple(history), tuple(flow), artefact is not None)
        params = {f"h_{k}": v for k, v in history.items()}
        params.update((f"f_{k}", v) for k, v in flow.items())
        if artefact is not None:
            params.update((f"a_{k}", v) for k, v in artefact.items())
        row = self._run(stmt, params)
        assert row is not None  # the history INSERT ... RETURNING always returns its row
        return row[0]  # type: ignore[no-any-return]

    def insert(self, table: Table, values: Params) -> None:
        self._run(_insert(table), values, rows=False)


def _raise(conn: Connection, exc: Any, sql: str, params: Any, cursor: Any) -> NoReturn:
    """Raise ``exc`` as SQLAlchemy would, invalidating a dropped connection.

    A driver error becomes its ``DBAPIError`` subclass; any other error (a value that
    cannot be bound) a ``StatementError``, as ``DBAPIError.instance`` decides.
    """
    dialect = conn.dialect
    dbapi_conn = None if conn.invalidated else conn.connection.dbapi_connection
    gone = (
        isinstance(exc, dialect.loaded_dbapi.Error)
        and not conn.closed
        and dialect.is_disconnect(exc, dbapi_conn, cursor)
    )
    error = DBAPIError.instance(
        sql,
        params,
        exc,
        dialect.loaded_dbapi.Error,
        hide_parameters=conn.engine.hide_parameters,
        connection_invalidated=gone,
        dialect=dialect,
    )
    if gone:
        # The server went away (restart, failover, killed backend): this connection is
        # closed and discarded, and so are the pool's idle ones, which are as dead; the
        # next checkout connects afresh. SQLAlchemy does the same on a disconnect.
        conn.invalidate(exc)
        conn.engine.dispose()
    raise error from exc
