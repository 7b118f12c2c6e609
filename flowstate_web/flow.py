"""The :class:`Flow` base class: a flow type is a subclass, a flow is one row of it."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar, Self

from sqlalchemy import Row, Select, select

from . import _executor, registry
from ._tx import AnySession, resolve_session
from ._values import base_type
from .declare import Artefact, Prop, State, Transition
from .errors import DefinitionError, FlowNotFoundError, FlowStateError, UnknownArtefactError
from .graph import ArtefactSpec, FlowGraph, PropSpec, StateSpec, TransitionSpec
from .models import artefacts, flows, transitions
from .records import ArtefactEntry, HistoryEntry, utc, utc_or_none

_DECLARATIONS = (State, Prop, Artefact, Transition)


class _Namespace(dict[str, Any]):
    """Class-body namespace that refuses to declare the same name twice."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, _DECLARATIONS) and isinstance(self.get(key), _DECLARATIONS):
            owner = self.get("__qualname__", "?")
            raise DefinitionError(f"{owner}: {key!r} is declared twice")
        super().__setitem__(key, value)


class _FlowMeta(type):
    @classmethod
    def __prepare__(  # type: ignore[override]
        mcs, name: str, bases: tuple[type, ...], **kwargs: Any
    ) -> _Namespace:
        return _Namespace()


class Flow(metaclass=_FlowMeta):
    """Base class of every flow type.

    Declare :class:`~flowstate_web.State`, :class:`~flowstate_web.Prop`,
    :class:`~flowstate_web.Artefact` attributes and ``@transition`` methods; the class is
    checked and registered when it is defined. Keyword options on the class statement:
    ``type_name`` (stored in each row; default the class name), ``destroy_on_complete``
    (delete the flow with its history when it reaches a final state), ``abstract``.
    """

    type_name: ClassVar[str]
    destroy_on_complete: ClassVar[bool] = False
    states: ClassVar[dict[str, State]]
    prop_fields: ClassVar[dict[str, Prop[Any]]]
    artefact_fields: ClassVar[dict[str, Artefact[Any]]]
    transition_fields: ClassVar[dict[str, Transition[Any, Any, Any]]]
    initial_state: ClassVar[str]
    error_states: ClassVar[frozenset[str]]
    final_states: ClassVar[frozenset[str]]
    _graph: ClassVar[FlowGraph]

    id: int
    state: str
    seq: int
    props: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    state_entered_at: datetime
    last_errored_at: datetime | None
    completed_at: datetime | None
    last_error_type: str | None
    last_error_message: str | None

    def __init_subclass__(
        cls,
        *,
        type_name: str | None = None,
        destroy_on_complete: bool | None = None,
        abstract: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if destroy_on_complete is not None:
            cls.destroy_on_complete = destroy_on_complete
        decl: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            decl.update({k: v for k, v in vars(klass).items() if isinstance(v, _DECLARATIONS)})
        cls.states = {k: v for k, v in decl.items() if isinstance(v, State)}
        cls.prop_fields = {k: v for k, v in decl.items() if isinstance(v, Prop)}
        cls.artefact_fields = {k: v for k, v in decl.items() if isinstance(v, Artefact)}
        cls.transition_fields = {k: v for k, v in decl.items() if isinstance(v, Transition)}
        if abstract:
            return
        cls.type_name = type_name or cls.__name__
        _validate(cls)
        cls._graph = _build_graph(cls)
        cls.initial_state = cls._graph.initial
        cls.error_states = frozenset(cls._graph.error_states)
        cls.final_states = frozenset(cls._graph.final_states)
        registry.register(cls)

    # -- construction -------------------------------------------------------------------

    def __init__(
        self, row: Row[Any] | Mapping[str, Any], session: AnySession | None = None
    ) -> None:
        """Wrap a ``flowstate_flows`` row (use :meth:`create` and :meth:`get` instead)."""
        self._session = session
        self._load(row)

    def _load(self, row: Row[Any] | Mapping[str, Any]) -> None:
        m = row._mapping if isinstance(row, Row) else row  # the hot path reads mappings
        self.id = m["id"]
        self.state = m["state"]
        self.seq = m["seq"]
        self.props = dict(m["props"] or {})
        self.created_at = utc(m["created_at"])
        self.updated_at = utc(m["updated_at"])
        self.state_entered_at = utc(m["state_entered_at"])
        self.last_errored_at = utc_or_none(m["last_errored_at"])
        self.completed_at = utc_or_none(m["completed_at"])
        self.last_error_type = m["last_error_type"]
        self.last_error_message = m["last_error_message"]

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
        """Re-read this flow's row (the latest committed or own-transaction data)."""
        row = _executor.read(resolve_session(self._session), self.id)
        if row is None:
            raise FlowNotFoundError(self.type_name, self.id)
        self._load(row)
        return self

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

    def available_transitions(self) -> tuple[TransitionSpec, ...]:
        """Return the declared transitions that leave the current state."""
        return self._graph.transitions_from(self.state)

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
        error: BaseException | None = None,
        meta: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> HistoryEntry:
        """Run the transition called ``name``, recording actor, reason, error and meta."""
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


_RESERVED = frozenset(name for name in dir(Flow) if not name.startswith("__")) | set(
    Flow.__annotations__
)


def _validate(cls: type[Flow]) -> None:
    where = cls.__qualname__
    for name in cls.states | cls.prop_fields | cls.artefact_fields | cls.transition_fields:
        if name in _RESERVED:
            raise DefinitionError(f"{where}: {name!r} is reserved by Flow; choose another name")
    for name, field in (cls.prop_fields | cls.artefact_fields).items():
        field.runtime_type = base_type(field.declared, owner=where, name=name)
    if not cls.states:
        raise DefinitionError(f"{where}: declare at least one State")
    initials = [n for n, s in cls.states.items() if s.initial]
    if len(initials) > 1:
        raise DefinitionError(f"{where}: more than one initial state: {', '.join(initials)}")
    for name, s in cls.states.items():
        if s.error and s.final:
            raise DefinitionError(f"{where}: state {name!r} cannot be both error and final")
    for name, t in cls.transition_fields.items():
        for state in (*t.sources, t.target):
            if state not in cls.states:
                raise DefinitionError(f"{where}.{name}: unknown state {state!r}")
        if t.persists is not None and t.persists not in cls.artefact_fields:
            raise DefinitionError(f"{where}.{name}: persists undeclared artefact {t.persists!r}")
        for ref in ([t.guard] if isinstance(t.guard, str) else []) + [
            a for a in t.after if isinstance(a, str)
        ]:
            if ref not in cls.transition_fields and not callable(getattr(cls, ref, None)):
                raise DefinitionError(f"{where}.{name}: {ref!r} is not a method of {where}")
        if t.retry:
            if not any(cls.states[s].error for s in t.sources):
                raise DefinitionError(
                    f"{where}.{name}: a retry transition must leave an error state"
                )
            params = list(inspect.signature(t.fn).parameters.values())[1:]
            if any(
                p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                for p in params
            ):
                raise DefinitionError(
                    f"{where}.{name}: a retry transition cannot take required arguments"
                    " (operators run it from the admin with none)"
                )


def _build_graph(cls: type[Flow]) -> FlowGraph:
    initial = next((n for n, s in cls.states.items() if s.initial), next(iter(cls.states)))
    return FlowGraph(
        name=cls.type_name,
        states=tuple(
            StateSpec(name=n, error=s.error, final=s.final, initial=n == initial)
            for n, s in cls.states.items()
        ),
        transitions=tuple(
            TransitionSpec(
                name=n,
                sources=t.sources,
                target=t.target,
                guard=t.guard_name,
                persists=t.persists,
                after=t.after_names,
                retry=t.retry,
                doc=t.doc,
            )
            for n, t in cls.transition_fields.items()
        ),
        artefacts=tuple(
            ArtefactSpec(name=n, type_name=a.type_name) for n, a in cls.artefact_fields.items()
        ),
        props=tuple(
            PropSpec(name=n, type_name=p.type_name, required=p.required)
            for n, p in cls.prop_fields.items()
        ),
        doc=(cls.__doc__ or "").strip() or None,
    )
