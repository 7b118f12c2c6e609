"""The :class:`Flow` base class: a flow type is a subclass, a flow is one row of it."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, Self, TypeVar, overload

from sqlalchemy import Row, Select, select

from . import _definition, _executor, _props, registry, timeouts
from ._definition import _FlowMeta
from ._tx import AnySession, resolve_session
from .declare import Artefact, Prop, State, Transition
from .errors import (
    FlowNotFoundError,
    FlowStateError,
    UnknownArtefactError,
    UnknownFlowTypeError,
)
from .graph import FlowGraph, TransitionSpec
from .models import artefacts, flows, transitions
from .records import ArtefactEntry, HistoryEntry, utc, utc_or_none

if TYPE_CHECKING:
    from typing import Never

T = TypeVar("T")

__all__ = ["Flow", "RowValue", "_FlowMeta", "load", "reserved_names"]


class RowValue(Generic[T]):
    """A column of the flow's row, read-only on the instance (transitions change it).

    At run time a non-data descriptor: the value lives in the instance ``__dict__`` (read at
    plain attribute speed on the hot path) and ``Flow.__setattr__`` refuses assignment. For
    mypy, ``__set__`` takes ``Never``, so ``flow.state = "x"`` is a type error.
    """

    name: str

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> RowValue[T]: ...
    @overload
    def __get__(self, obj: Flow, owner: type[Any]) -> T: ...
    def __get__(self, obj: Flow | None, owner: type[Any]) -> RowValue[T] | T:
        if obj is None:
            return self
        return obj.__dict__[self.name]  # type: ignore[no-any-return]

    if TYPE_CHECKING:

        def __set__(self, obj: Flow, value: Never) -> NoReturn: ...


class Flow(metaclass=_FlowMeta):
    """Base class of every flow type.

    Declare :class:`~flowstate_web.State`, :class:`~flowstate_web.Prop`,
    :class:`~flowstate_web.Artefact` attributes and ``@transition`` methods; the class is
    checked and registered when it is defined. Keyword options on the class statement:
    ``type_name`` (stored in each row and used in the admin's URLs: 1-200 characters of
    ``A-Z a-z 0-9 _ . -``; default the class name), ``destroy_on_complete`` (delete the flow
    with its history when it reaches a final state), ``abstract``,
    ``state_timeout`` (the default timeout of non-final, non-error states, see
    :mod:`flowstate_web.timeouts`).

    On an instance, the row's values (``state``, ``seq``, timestamps...) are read-only;
    assigning a declared prop checks and stages it, and the next transition or :meth:`save`
    writes it. Other public names cannot be assigned; ``_``-names are the subclass's own.
    """

    type_name: ClassVar[str]
    destroy_on_complete: ClassVar[bool] = False
    state_timeout: ClassVar[timedelta | None] = None
    states: ClassVar[dict[str, State]]
    prop_fields: ClassVar[dict[str, Prop[Any]]]
    artefact_fields: ClassVar[dict[str, Artefact[Any]]]
    transition_fields: ClassVar[dict[str, Transition[Any, Any, Any]]]
    initial_state: ClassVar[str]
    error_states: ClassVar[frozenset[str]]
    final_states: ClassVar[frozenset[str]]
    _graph: ClassVar[FlowGraph]

    #: The stored row, read-only: transitions change it (``seq`` counts history rows).
    id = RowValue[int]()
    state = RowValue[str]()
    seq = RowValue[int]()
    created_at = RowValue[datetime]()
    updated_at = RowValue[datetime]()
    state_entered_at = RowValue[datetime]()
    last_errored_at = RowValue[datetime | None]()
    completed_at = RowValue[datetime | None]()
    last_error_type = RowValue[str | None]()
    last_error_message = RowValue[str | None]()

    _session: AnySession | None
    #: The props as stored, and this instance's checked edits not written yet.
    _props: dict[str, Any]
    _staged: dict[str, Any]

    def __init_subclass__(
        cls,
        *,
        type_name: str | None = None,
        destroy_on_complete: bool | None = None,
        abstract: bool = False,
        state_timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if destroy_on_complete is not None:
            cls.destroy_on_complete = destroy_on_complete
        if state_timeout is not None:
            cls.state_timeout = state_timeout
        decl: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            decl.update(
                {k: v for k, v in vars(klass).items() if isinstance(v, _definition.DECLARATIONS)}
            )
        cls.states = {k: v for k, v in decl.items() if isinstance(v, State)}
        cls.prop_fields = {k: v for k, v in decl.items() if isinstance(v, Prop)}
        cls.artefact_fields = {k: v for k, v in decl.items() if isinstance(v, Artefact)}
        cls.transition_fields = {k: v for k, v in decl.items() if isinstance(v, Transition)}
        if abstract:
            return
        cls.type_name = cls.__name__ if type_name is None else type_name
        _definition.validate(cls, _RESERVED)
        cls._graph = _definition.build_graph(cls)
        cls.initial_state = cls._graph.initial
        cls.error_states = frozenset(cls._graph.error_states)
        cls.final_states = frozenset(cls._graph.final_states)
        registry.register(cls)

    # -- construction -------------------------------------------------------------------

    def __init__(
        self, row: Row[Any] | Mapping[str, Any], session: AnySession | None = None
    ) -> None:
        """Wrap a ``flowstate_flows`` row (use :meth:`create` and :meth:`get` instead)."""
        d = self.__dict__
        d["_session"] = session
        d["_staged"] = {}
        self._load(row)

    def _load(self, row: Row[Any] | Mapping[str, Any]) -> None:
        """Show ``row`` (staged edits stay staged on top of its props)."""
        m = row._mapping if isinstance(row, Row) else row  # the hot path reads mappings
        d = self.__dict__
        d["_flowstate_row"] = m  # what this instance shows, until a transition writes
        d["id"] = m["id"]
        d["state"] = m["state"]
        d["seq"] = m["seq"]
        d["_props"] = dict(m["props"] or {})
        d["created_at"] = utc(m["created_at"])
        d["updated_at"] = utc(m["updated_at"])
        d["state_entered_at"] = utc(m["state_entered_at"])
        d["last_errored_at"] = utc_or_none(m["last_errored_at"])
        d["completed_at"] = utc_or_none(m["completed_at"])
        d["last_error_type"] = m["last_error_type"]
        d["last_error_message"] = m["last_error_message"]

    def _discard(self, row: Mapping[str, Any] | None) -> None:
        """Drop the staged edits (and show ``row``, the last committed row read, if given)."""
        self.__dict__["_staged"] = {}
        if row is not None:
            self._load(row)

    if not TYPE_CHECKING:  # mypy keeps checking attribute names and Prop types statically

        def __setattr__(self, name: str, value: Any) -> None:
            if name.startswith("_") and name not in _RESERVED:
                object.__setattr__(self, name, value)  # the subclass's own private state
            elif name in self.prop_fields:
                self.update(**{name: value})
            else:
                raise AttributeError(self._read_only(name))

        def __delattr__(self, name: str) -> None:
            if name.startswith("_") and name not in _RESERVED:
                object.__delattr__(self, name)
            elif name in self.prop_fields:
                raise AttributeError(
                    f"{self.type_name} #{self.id}: prop {name!r} cannot be deleted; assign a value"
                )
            else:  # ``del flow.state`` would leave an instance that fails on every read
                raise AttributeError(self._read_only(name))

    def _read_only(self, name: str) -> str:
        where = f"{self.type_name} #{self.__dict__.get('id', '?')}"
        if name in _ROW_ATTRIBUTES:
            return (
                f"{where}: {name!r} is read-only (it is the stored row's); the state changes"
                " only by running a transition (flow.<transition>() or flow.run(name)),"
                " props by assigning a declared prop"
            )
        if name in self.states or name in self.transition_fields or name in self.artefact_fields:
            return f"{where}: {name!r} is a declared state, transition or artefact, not a prop"
        return (
            f"{where}: cannot set {name!r}: only declared props can be assigned"
            f" (props: {', '.join(self.prop_fields) or 'none'}); names starting with '_'"
            " are free for your own attributes"
        )

    @classmethod
    def create(cls, *, session: AnySession | None = None, **props: Any) -> Self:
        """Insert a new flow in the initial state; props are type-checked first.

        Raises :class:`~flowstate_web.errors.PayloadValidationError` naming a missing,
        unknown or mistyped prop; nothing is written then.
        """
        return _executor.create(cls, props, session)

    @classmethod
    def get(cls, flow_id: int, *, session: AnySession | None = None, lock: bool = False) -> Self:
        """Load the flow ``flow_id`` of this type or raise :class:`FlowNotFoundError`.

        ``lock=True`` reads the row locked (``SELECT ... FOR UPDATE``; SQLite's write lock)
        in the session's transaction, for a job about to run a transition: the first
        transition on the returned object in that same transaction then uses the row as
        read instead of locking and reading it again (one round trip fewer). The lock is
        held until the transaction ends, which that transition's commit does.
        """
        sess = resolve_session(session)
        row = _executor.read(sess, flow_id, cls.type_name, lock=lock)
        if row is None:
            raise FlowNotFoundError(cls.type_name, flow_id)
        flow = cls(row, session)
        if lock:
            _executor.hold(sess, flow)
        return flow

    @classmethod
    def select(cls) -> Select[Any]:
        """Return ``SELECT * FROM flowstate_flows`` restricted to this type, to refine."""
        return select(flows).where(flows.c.type == cls.type_name)

    @classmethod
    def graph(cls) -> FlowGraph:
        """Return the declared graph: states, transitions, artefacts, props."""
        return cls._graph

    def refresh(self) -> Self:
        """Re-read this flow's row (the latest committed or own-transaction data).

        Staged prop edits are dropped.
        """
        row = _executor.read(resolve_session(self._session), self.id)
        if row is None:
            raise FlowNotFoundError(self.type_name, self.id)
        self._discard(row)
        return self

    # -- props --------------------------------------------------------------------------

    @property
    def props(self) -> Mapping[str, Any]:
        """Return the props (stored, with this instance's staged edits on top), read-only.

        ``dict`` and ``list`` values are copies, as through the accessors: changing one
        changes neither the flow nor what its guards see.
        """
        return MappingProxyType(
            {
                name: copy.deepcopy(value) if isinstance(value, dict | list) else value
                for name, value in {**self._props, **self._staged}.items()
            }
        )

    @property
    def staged(self) -> Mapping[str, Any]:
        """Return the prop edits staged on this instance and not written yet, read-only."""
        return MappingProxyType(self._staged)

    def update(self, **props: Any) -> Self:
        """Check ``props`` and stage them (as ``flow.<prop> = value`` does, for several).

        The next transition run on this instance writes them in its own database
        transaction, or :meth:`save` does. Raises one
        :class:`~flowstate_web.errors.PayloadValidationError` naming every unknown,
        ``None`` or mistyped prop; nothing is staged then.
        """
        where = f"{self.type_name} #{self.id}"
        clean = _props.check_props(type(self), props, where=where, partial=True)
        for name, value in clean.items():
            # A staged dict or list is a copy: changing the caller's object later changes
            # nothing here.
            self._staged[name] = copy.deepcopy(value) if self.prop_fields[name].copies else value
        return self

    def save(
        self,
        *,
        actor: str | None = None,
        reason: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> HistoryEntry | None:
        """Write the staged prop edits now, without a transition.

        Its own transaction under the transaction rule, under the row lock: bumps
        ``updated_at`` and ``seq`` and writes a history row of kind ``"update"`` (name
        ``"save"``, from and to the current state) recording old and new values. Returns
        that entry, or ``None`` when nothing differs from the stored props (nothing written).
        """
        info = _executor.RunInfo(actor=actor, reason=reason, meta=meta)
        return _executor.save(self, info)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.id} {self.state}>"

    # -- state --------------------------------------------------------------------------

    @property
    def errored(self) -> bool:
        """Return whether the current state is an error state."""
        return self.state in self.error_states

    @property
    def state_declared(self) -> bool:
        """Return whether the stored state is still declared on the class."""
        return self.state in self.states

    @property
    def is_final(self) -> bool:
        """Return whether the current state is a final state (the flow is complete)."""
        return self.state in self.final_states

    @property
    def stalled_since(self) -> datetime | None:
        """Return when this flow's state timeout passed (``None``: no timeout applies)."""
        return timeouts.stalled_since(self)

    @property
    def stalled(self) -> bool:
        """Return whether this flow is past its state's timeout (see :mod:`.timeouts`)."""
        return timeouts.is_stalled(self)

    @classmethod
    def stalled_query(cls, now: datetime | None = None) -> Select[Any]:
        """Return ``SELECT * FROM flowstate_flows`` for this type's stalled flows, to refine."""
        return cls.select().where(timeouts.stalled_condition(cls, now))

    def available_transitions(self, *, guards: bool = True) -> tuple[TransitionSpec, ...]:
        """Return the declared transitions that could run now.

        Those leaving the current state whose guard passes on this instance as it is (the
        row as last read plus staged edits; :meth:`refresh` first for the latest). Guards
        must only read. ``guards=False`` skips them: every transition leaving the state.
        A guard can still refuse under the row lock if the data changes meanwhile.
        """
        leaving = self._graph.transitions_from(self.state)
        if not guards:
            return leaving
        return tuple(spec for spec in leaving if self.why_not(spec.name) is None)

    def why_not(self, name: str) -> str | None:
        """Return why transition ``name`` cannot run now, or ``None`` if it can.

        Checks the source state, then the guard, on this instance as it is (writing nothing):
        ``"state is 'x', needs one of 'a', 'b'"``, ``"guard has_response returned False"``,
        ``"guard has_response raised KeyError: 'id'"``.
        """
        t = self.transition_fields.get(name)
        if t is None:
            raise FlowStateError(f"{self.type_name} #{self.id}: no transition {name!r}")
        if self.state not in t.sources:
            return (
                f"state is {self.state!r}, needs {'one of ' if len(t.sources) > 1 else ''}"
                + ", ".join(repr(s) for s in t.sources)
            )
        if t.guard is None:
            return None
        staged = dict(self._staged)
        try:
            ok = _executor.guard_passes(self, t)
        except Exception as exc:
            return f"guard {t.guard_name} raised {type(exc).__name__}: {exc}"
        finally:  # a guard that assigns a prop must not stage it by being asked
            self.__dict__["_staged"] = staged
        return None if ok else f"guard {t.guard_name} returned False"

    def retry_transitions(self) -> tuple[TransitionSpec, ...]:
        """Return the retry transitions that leave the current state."""
        return self._graph.retry_transitions_from(self.state)

    # -- running ------------------------------------------------------------------------

    def run(
        self,
        name: str,
        *args: Any,
        actor: str | None = None,
        reason: str | None = None,
        error: BaseException | _executor.Implicit | None = _executor.IMPLICIT,
        meta: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> HistoryEntry:
        """Run the transition called ``name``, recording actor, reason, error and meta.

        Entering an error state records ``error``; by default the exception the calling
        function is handling (``try: ... except: flow.run("fail")``) and no other
        (see :func:`~flowstate_web._executor.implicit_error`); ``error=None`` records none.
        """
        t = self.transition_fields.get(name)
        if t is None:
            raise FlowStateError(f"{self.type_name} #{self.id}: no transition {name!r}")
        info = _executor.RunInfo(actor=actor, reason=reason, error=error, meta=meta)
        return _executor.execute(self, t, args, kwargs, info)

    def retry(
        self, name: str | None = None, *, actor: str | None = None, reason: str | None = None
    ) -> HistoryEntry:
        """Run a declared retry transition (the only one leaving this state if ``name`` is None)."""
        names = [t.name for t in self.retry_transitions()]
        if name is None:
            if len(names) != 1:
                raise FlowStateError(
                    f"{self.type_name} #{self.id}: state {self.state!r} has"
                    f" {len(names)} retry transitions ({', '.join(names) or 'none'}); name one"
                )
            name = names[0]
        spec = self._graph.transition(name)
        if spec is None or not spec.retry:
            raise FlowStateError(f"{self.type_name}: {name!r} is not a retry transition")
        return self.run(name, actor=actor, reason=reason)

    def delete(self) -> None:
        """Delete this flow with its history and artefacts."""
        _executor.delete_flows(self._session, [self.id])

    # -- history and artefacts ----------------------------------------------------------

    def history(self) -> list[HistoryEntry]:
        """Return every transition of this flow, oldest first."""
        sess = resolve_session(self._session)
        rows = sess.execute(
            select(transitions).where(transitions.c.flow_id == self.id).order_by(transitions.c.seq)
        )
        return [HistoryEntry.from_row(r) for r in rows]

    def artefacts(self) -> list[ArtefactEntry]:
        """Return every artefact version of this flow, oldest first."""
        return list(self._artefact_rows(None))

    def latest_artefact(self, name: str) -> ArtefactEntry | None:
        """Return the newest version of artefact ``name``, or ``None``."""
        return next(self._artefact_rows(name, newest_first=True, limit=1), None)

    def artefact_versions(self, name: str) -> list[ArtefactEntry]:
        """Return every version of artefact ``name``, oldest first."""
        return list(self._artefact_rows(name))

    def _artefact_rows(
        self, name: str | None, *, newest_first: bool = False, limit: int | None = None
    ) -> Iterator[ArtefactEntry]:
        if name is not None and name not in self.artefact_fields:
            raise UnknownArtefactError(f"{self.type_name}: no artefact {name!r} is declared")
        q = select(artefacts).where(artefacts.c.flow_id == self.id)
        if name is not None:
            q = q.where(artefacts.c.name == name)
        q = q.order_by(artefacts.c.id.desc() if newest_first else artefacts.c.id).limit(limit)
        sess = resolve_session(self._session)
        return (ArtefactEntry.from_row(r) for r in sess.execute(q))


#: Every attribute name of ``Flow`` a declaration may not take (README: "Reserved names").
_RESERVED = frozenset(name for name in dir(Flow) if not name.startswith("__")) | set(
    Flow.__annotations__
)
#: The row's values and what is derived from them: read-only on an instance.
_ROW_ATTRIBUTES = frozenset(
    name for name, value in vars(Flow).items() if isinstance(value, RowValue | property)
)


def reserved_names() -> frozenset[str]:
    """Return the names a state, prop, artefact or transition may not take (``Flow``'s own)."""
    return _RESERVED


def load(flow_id: int, *, session: AnySession | None = None) -> Flow:
    """Load flow ``flow_id`` as an instance of its own flow type, whatever that is.

    Raises :class:`FlowNotFoundError` when no flow has this id, and
    :class:`UnknownFlowTypeError` when its type is not defined in this process.
    """
    row = _executor.read(resolve_session(session), flow_id)
    if row is None:
        raise FlowNotFoundError("flow", flow_id)
    cls = registry.find_flow_type(row["type"])
    if cls is None:
        raise UnknownFlowTypeError(
            f"flow #{flow_id} is of type {row['type']!r}, which is not defined in this process"
            " (import the module that declares it)"
        )
    return cls(row, session)
