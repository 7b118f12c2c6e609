"""What a flow class declares: states, props, artefacts and transitions.

These objects only describe; :mod:`flowstate_web._executor` runs transitions and
:mod:`flowstate_web.flow` turns the declarations into a :class:`~flowstate_web.graph.FlowGraph`.
"""

from __future__ import annotations

import copy
import functools
import types
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from . import _executor
from ._values import type_name

if TYPE_CHECKING:
    from .flow import Flow
    from .records import ArtefactEntry, HistoryEntry

T = TypeVar("T")
F = TypeVar("F", bound="Flow")
P = ParamSpec("P")
R = TypeVar("R")

_MISSING: Any = object()


class State:
    """A declared state; the attribute name is the state's name.

    :param initial: new flows start here (default: the first declared state).
    :param error: being here means the flow failed (``errored`` is true, SQL-filterable).
    :param final: the flow is complete here (sets ``completed_at``).
    :param timeout: how long a flow may stay here before it counts as *stalled*; ``None``
        means never, even when the class declares a ``state_timeout`` default (omitting it
        inherits that default). Not allowed on final or error states (checked with the class,
        see :mod:`flowstate_web.timeouts`).
    :param on_timeout: the name of a declared transition from this state into an error state
        that :func:`flowstate_web.timeouts.sweep` runs on flows past the timeout.
    """

    name: str

    def __init__(
        self,
        *,
        initial: bool = False,
        error: bool = False,
        final: bool = False,
        timeout: timedelta | None = _MISSING,
        on_timeout: str | None = None,
    ) -> None:
        self.initial = initial
        self.error = error
        self.final = final
        #: ``_MISSING`` until the class applies its default (see ``timeouts.resolve``).
        self.timeout = timeout
        self.on_timeout = on_timeout

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"State({getattr(self, 'name', '?')!r})"


class Prop(Generic[T]):
    """A typed field of the flow's JSON payload, read and assigned as an attribute.

    ``my_record_id = Prop(str)`` makes ``flow.my_record_id`` a ``str`` for mypy too, and
    ``flow.my_record_id = 1`` a mypy error. A prop without ``default`` is required when the
    flow is created. Assigning checks the value at once and stages it on the instance; the
    next transition of that instance (or ``flow.save()``) writes it. ``dict`` and ``list``
    values are read as copies: change one by assigning a new value.
    """

    name: str
    owner_name: str
    runtime_type: type
    #: Whether reads return a copy (a ``dict``/``list`` changed in place would write nothing).
    copies: bool = False

    def __init__(self, type_: type[T], *, default: T = _MISSING) -> None:
        self.declared = type_
        self.default = default

    @property
    def required(self) -> bool:
        """Return whether the prop must be given on creation."""
        return self.default is _MISSING

    @property
    def type_name(self) -> str:
        """Return the declared type as text."""
        return type_name(self.declared)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.owner_name = owner.__name__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Prop[T]: ...
    @overload
    def __get__(self, obj: Flow, owner: type[Any]) -> T: ...
    def __get__(self, obj: Flow | None, owner: type[Any]) -> Prop[T] | T:
        if obj is None:
            return self
        name = self.name
        staged = obj._staged
        value = staged[name] if name in staged else obj._props.get(name, self.default)
        if value is _MISSING:
            raise AttributeError(
                f"{obj.type_name} #{obj.id} has no value for prop {name!r}"
                " (a required prop declared after the flow was created?)"
            )
        return copy.deepcopy(value) if self.copies else value  # type: ignore[no-any-return]

    def __set__(self, obj: Flow, value: T) -> None:
        """Check ``value`` and stage it; raise :class:`PayloadValidationError` (nothing staged)."""
        obj.update(**{self.name: value})


class Artefact(Generic[T]):
    """A named, typed payload that a transition persists (``persists=``).

    On an instance, ``flow.<name>`` is a :class:`BoundArtefact` to read it back.
    """

    name: str
    runtime_type: type

    def __init__(self, type_: type[T]) -> None:
        self.declared = type_

    @property
    def type_name(self) -> str:
        """Return the declared type as text."""
        return type_name(self.declared)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Artefact[T]: ...
    @overload
    def __get__(self, obj: Flow, owner: type[Any]) -> BoundArtefact[T]: ...
    def __get__(self, obj: Flow | None, owner: type[Any]) -> Artefact[T] | BoundArtefact[T]:
        if obj is None:
            return self
        return BoundArtefact(obj, self.name)


class BoundArtefact(Generic[T]):
    """Read access to one declared artefact of one flow."""

    def __init__(self, flow: Flow, name: str) -> None:
        self._flow = flow
        self.name = name

    def latest(self) -> T | None:
        """Return the payload of the newest version, or ``None`` if none was persisted."""
        entry = self._flow.latest_artefact(self.name)
        return None if entry is None else entry.payload

    def versions(self) -> list[ArtefactEntry]:
        """Return every persisted version, oldest first."""
        return self._flow.artefact_versions(self.name)

    def exists(self) -> bool:
        """Return whether at least one version was persisted."""
        return self._flow.latest_artefact(self.name) is not None


Guard = Callable[[Any], bool]
Callback = Callable[[Any], None]
StateRef = State | str


def _state_name(ref: StateRef) -> str:
    return ref if isinstance(ref, str) else ref.name


class Transition(Generic[F, P, R]):
    """A declared transition wrapping the method that computes it.

    Calling it on a flow runs it (see :mod:`flowstate_web._executor`) and returns the
    :class:`~flowstate_web.records.HistoryEntry` it wrote. The wrapped method runs on the
    freshly locked flow; with ``persists=`` its return value is the artefact to store.
    """

    name: str

    def __init__(
        self,
        fn: Callable[Concatenate[F, P], R],
        *,
        source: StateRef | Sequence[StateRef],
        target: StateRef,
        guard: Guard | str | None,
        persists: Artefact[Any] | str | None,
        after: Callback | str | Sequence[Callback | str],
        retry: bool,
        enqueue: str | Sequence[str] = (),
    ) -> None:
        self.fn = fn
        self.name = fn.__name__
        refs = [source] if isinstance(source, State | str) else list(source)
        self.source_refs: list[StateRef] = refs
        self.target_ref: StateRef = target
        self.guard = guard
        self.persists_ref = persists
        self.after: tuple[Callback | str, ...] = (
            (after,) if isinstance(after, str) or callable(after) else tuple(after)
        )
        self.retry = retry
        self.enqueue: tuple[str, ...] = (enqueue,) if isinstance(enqueue, str) else tuple(enqueue)
        self.doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else None
        self._method = self._bind_target()

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self._method.__name__ = name

    def _bind_target(self) -> Callable[..., HistoryEntry]:
        """Return the function ``flow.<name>`` is bound from (built once, not per access)."""
        t = self

        def run(flow: Any, *args: Any, **kwargs: Any) -> HistoryEntry:
            return _executor.execute(flow, t, args, kwargs)

        run.__name__ = self.name
        run.__doc__ = self.fn.__doc__
        return run

    # The names are read on every transition: computed once, on first use (after the
    # class statement has named every State).
    @functools.cached_property
    def sources(self) -> tuple[str, ...]:
        """Return the source state names."""
        return tuple(_state_name(s) for s in self.source_refs)

    @functools.cached_property
    def target(self) -> str:
        """Return the target state name."""
        return _state_name(self.target_ref)

    @functools.cached_property
    def persists(self) -> str | None:
        """Return the persisted artefact's name, if any."""
        ref = self.persists_ref
        return ref if ref is None or isinstance(ref, str) else ref.name

    @property
    def guard_name(self) -> str | None:
        """Return a name for the guard to show in diagrams."""
        if self.guard is None:
            return None
        if isinstance(self.guard, str):
            return self.guard
        name = getattr(self.guard, "__name__", "guard")
        return "guard" if name == "<lambda>" else str(name)

    @property
    def after_names(self) -> tuple[str, ...]:
        """Return the callbacks' names."""
        return tuple(
            a if isinstance(a, str) else getattr(a, "__name__", "callback") for a in self.after
        )

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Transition[F, P, R]: ...
    @overload
    def __get__(self, obj: F, owner: type[Any]) -> Callable[P, HistoryEntry]: ...
    def __get__(
        self, obj: F | None, owner: type[Any]
    ) -> Transition[F, P, R] | Callable[P, HistoryEntry]:
        if obj is None:
            return self
        return types.MethodType(self._method, obj)


def transition(
    *,
    source: StateRef | Sequence[StateRef],
    target: StateRef,
    guard: Guard | str | None = None,
    persists: Artefact[Any] | str | None = None,
    after: Callback | str | Sequence[Callback | str] = (),
    retry: bool = False,
    enqueue: str | Sequence[str] = (),
) -> Callable[[Callable[Concatenate[F, P], R]], Transition[F, P, R]]:
    """Declare the decorated method as a transition from ``source`` to ``target``.

    :param source: the state (or states) the flow must be in; checked under the row lock.
    :param target: the state the flow moves to.
    :param guard: ``f(flow) -> bool`` (or a method name) evaluated on the locked, fresh row
        plus the prop edits staged on the instance; false raises
        :class:`~flowstate_web.errors.GuardFailedError` and writes nothing. It must only read
        (``available_transitions()`` and ``why_not()`` evaluate it outside a transition).
    :param persists: the declared :class:`Artefact` that the method's return value is stored as.
    :param after: callbacks ``f(flow)`` (or method names) run once, after the outermost commit.
    :param retry: this transition is the way out of an error state; the admin offers it.
    :param enqueue: job name(s) handed to the queue durably: written to the outbox in the
        transition's own transaction, sent after the commit, re-sent by the relay if the
        send was lost (at-least-once; see :mod:`flowstate_web.outbox`).
    """

    def decorate(fn: Callable[Concatenate[F, P], R]) -> Transition[F, P, R]:
        return Transition(
            fn,
            source=source,
            target=target,
            guard=guard,
            persists=persists,
            after=after,
            retry=retry,
            enqueue=enqueue,
        )

    return decorate
