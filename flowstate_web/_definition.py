"""What happens when a flow class is defined: its namespace, its checks, its graph.

:func:`validate` raises :class:`~flowstate_web.errors.DefinitionError` (or a subclass)
naming the flow's type name; :func:`build_graph` turns the declarations into the frozen
:class:`~flowstate_web.graph.FlowGraph` that diagrams and the admin read.
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Any

from ._values import base_type
from .declare import Artefact, Prop, State, Transition
from .errors import DefinitionError, UnknownArtefactError, UnknownStateError
from .graph import ArtefactSpec, FlowGraph, PropSpec, StateSpec, TransitionSpec

if TYPE_CHECKING:
    from .flow import Flow

DECLARATIONS = (State, Prop, Artefact, Transition)

#: What a type name may be: it is stored in each row and is a segment of the admin's URLs.
TYPE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")

SHARED_NAMESPACE = (
    "states, props, artefacts and transitions share one namespace with each other"
    " and with Flow's own attributes"
)


class _Namespace(dict[str, Any]):
    """Class-body namespace that refuses to declare the same name twice."""

    def __init__(self, owner: str) -> None:
        super().__init__()
        self.owner = owner

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, DECLARATIONS) and isinstance(self.get(key), DECLARATIONS):
            raise DefinitionError(f"{self.owner}: {key!r} is declared twice ({SHARED_NAMESPACE})")
        super().__setitem__(key, value)


class _FlowMeta(type):
    """Metaclass of ``Flow``: gives the class body a :class:`_Namespace` named by type name."""

    @classmethod
    def __prepare__(  # type: ignore[override]
        mcs, name: str, bases: tuple[type, ...], **kwargs: Any
    ) -> _Namespace:
        return _Namespace(str(kwargs.get("type_name") or name))


def validate(cls: type[Flow], reserved: frozenset[str]) -> None:
    """Check ``cls``'s type name and declarations (none may take a ``reserved`` name)."""
    where = cls.type_name
    if not TYPE_NAME.fullmatch(where) or not where.strip("."):
        raise DefinitionError(
            f"{cls.__module__}.{cls.__qualname__}: type name {where[:80]!r} cannot be used:"
            " it is stored in each row and is a segment of the admin's URLs, so it must be"
            " 1-200 characters of A-Z, a-z, 0-9, '_', '.', '-' (and not only dots)"
        )
    for name in cls.states | cls.prop_fields | cls.artefact_fields | cls.transition_fields:
        if name in reserved:
            raise DefinitionError(
                f"{where}: {name!r} is reserved by Flow ({SHARED_NAMESPACE}; see README"
                ' "Reserved names"); choose another name'
            )
    for name, field in (cls.prop_fields | cls.artefact_fields).items():
        field.runtime_type = base_type(field.declared, owner=where, name=name)
    for prop in cls.prop_fields.values():
        prop.copies = prop.runtime_type in (dict, list)
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
                raise UnknownStateError(
                    f"{where}.{name}: unknown state {state!r} (declared: {', '.join(cls.states)})"
                )
        if t.persists is not None and t.persists not in cls.artefact_fields:
            raise UnknownArtefactError(
                f"{where}.{name}: persists undeclared artefact {t.persists!r}"
                f" (declared: {', '.join(cls.artefact_fields) or 'none'})"
            )
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


def build_graph(cls: type[Flow]) -> FlowGraph:
    """Return the declared graph of ``cls`` as frozen data."""
    from . import timeouts  # timeouts reads the engine's tables; flow classes come first

    initial = next((n for n, s in cls.states.items() if s.initial), next(iter(cls.states)))
    timed = timeouts.resolve(cls)
    return FlowGraph(
        name=cls.type_name,
        states=tuple(
            StateSpec(
                name=n,
                error=s.error,
                final=s.final,
                initial=n == initial,
                timeout=timed[n][0] if n in timed else None,
                on_timeout=timed[n][1] if n in timed else None,
            )
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
                enqueue=t.enqueue,
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
