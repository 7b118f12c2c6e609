"""Check a flow type's declared graph for modelling mistakes, without running anything.

:func:`lint` reads only the :class:`~flowstate_web.graph.FlowGraph` (the engine's single
declared source), so ``flask flowstate lint``, the admin's type page and a test in the host
application all see the same messages. Each message has a stable ``code``:

============  ========  ===========================================================
code          severity  meaning
============  ========  ===========================================================
FS101         error     a state cannot be reached from the initial state
FS102         error     a non-final, non-error state has no transition out (dead end)
FS103         warning   an error state has no retry transition (only code can leave it)
FS104         warning   a final state has transitions out (completed flows can move on)
FS105         warning   a transition can never run: none of its sources is reachable
FS106         warning   a state has a timeout but no ``on_timeout`` and no job hand-off
============  ========  ===========================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from .graph import FlowGraph

if TYPE_CHECKING:
    from .flow import Flow

Severity = Literal["error", "warning"]

#: Every code :func:`lint` can report, with its severity and a short title.
CODES: Final[dict[str, tuple[Severity, str]]] = {
    "FS101": ("error", "unreachable state"),
    "FS102": ("error", "dead end"),
    "FS103": ("warning", "error state without retry"),
    "FS104": ("warning", "final state with transitions out"),
    "FS105": ("warning", "transition that can never run"),
    "FS106": ("warning", "timeout without action"),
}


@dataclass(frozen=True, slots=True)
class LintMessage:
    """One finding about one flow type's declared graph."""

    code: str
    severity: Severity
    type_name: str
    message: str
    states: tuple[str, ...] = ()
    transitions: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """Return the short title of this message's code."""
        return CODES[self.code][1]

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready description (stable keys)."""
        return {
            "code": self.code,
            "severity": self.severity,
            "type": self.type_name,
            "title": self.title,
            "message": self.message,
            "states": list(self.states),
            "transitions": list(self.transitions),
        }

    def __str__(self) -> str:
        return f"{self.severity} {self.code} {self.type_name}: {self.message}"


def reachable(graph: FlowGraph) -> frozenset[str]:
    """Return the states a flow can reach from the initial state by declared transitions."""
    seen = {graph.initial}
    todo = [graph.initial]
    while todo:
        state = todo.pop()
        for t in graph.transitions_from(state):
            if t.target not in seen:
                seen.add(t.target)
                todo.append(t.target)
    return frozenset(seen)


def lint(target: FlowGraph | type[Flow], *, ignore: Iterable[str] = ()) -> list[LintMessage]:
    """Return the findings about ``target``'s declared graph, errors first, then by code.

    :param target: a flow class or its :class:`~flowstate_web.graph.FlowGraph`.
    :param ignore: codes to leave out (e.g. ``{"FS103"}`` for a type whose error state is
        deliberately terminal).
    """
    graph = target if isinstance(target, FlowGraph) else target.graph()
    skip = frozenset(ignore)
    found = [m for m in _check(graph) if m.code not in skip]
    return sorted(found, key=lambda m: (m.severity != "error", m.code))


def lint_all(types: Iterable[type[Flow]], *, ignore: Iterable[str] = ()) -> list[LintMessage]:
    """Return :func:`lint` of every class in ``types``, in the order given."""
    skip = tuple(ignore)
    return [m for cls in types for m in lint(cls, ignore=skip)]


def _msg(
    code: str,
    graph: FlowGraph,
    message: str,
    states: Iterable[str] = (),
    transitions: Iterable[str] = (),
) -> LintMessage:
    return LintMessage(
        code=code,
        severity=CODES[code][0],
        type_name=graph.name,
        message=message,
        states=tuple(states),
        transitions=tuple(transitions),
    )


def _check(graph: FlowGraph) -> Iterable[LintMessage]:
    name = graph.name
    ok = reachable(graph)
    for s in graph.states:
        if s.name not in ok:
            yield _msg(
                "FS101",
                graph,
                f"state {s.name!r} cannot be reached from the initial state"
                f" {graph.initial!r}: no declared transition leads there",
                states=(s.name,),
            )
        leaving = graph.transitions_from(s.name)
        if not s.final and not s.error and not leaving:
            yield _msg(
                "FS102",
                graph,
                f"state {s.name!r} is neither final nor an error state, but no transition"
                " leaves it: flows that enter it stay there forever",
                states=(s.name,),
            )
        if s.error and not any(t.retry for t in leaving):
            others = ", ".join(t.name for t in leaving)
            yield _msg(
                "FS103",
                graph,
                f"error state {s.name!r} has no retry transition, so the admin offers no"
                " Retry"
                + (f" (it is left only by {others})" if others else " and nothing leaves it"),
                states=(s.name,),
                transitions=tuple(t.name for t in leaving),
            )
        if s.final and leaving:
            yield _msg(
                "FS104",
                graph,
                f"final state {s.name!r} is left by {', '.join(t.name for t in leaving)}:"
                " completed flows can move on (and may be pruned or destroyed first)",
                states=(s.name,),
                transitions=tuple(t.name for t in leaving),
            )
        timeout = getattr(s, "timeout", None)
        if timeout is not None and not s.final and not s.error:
            entering = [t for t in graph.transitions if t.target == s.name]
            handed_off = any(getattr(t, "enqueue", None) for t in entering)
            if not getattr(s, "on_timeout", None) and not handed_off:
                yield _msg(
                    "FS106",
                    graph,
                    f"state {s.name!r} has a timeout but no on_timeout transition and no"
                    " transition into it hands off a job (enqueue=): a flow past it is"
                    " reported stalled and nothing moves it on",
                    states=(s.name,),
                    transitions=tuple(t.name for t in entering),
                )
    for t in graph.transitions:
        if not any(src in ok for src in t.sources):
            yield _msg(
                "FS105",
                graph,
                f"transition {t.name!r} can never run: its source"
                f" {'state is' if len(t.sources) == 1 else 'states are'}"
                f" {', '.join(map(repr, t.sources))}, unreachable in {name}",
                states=t.sources,
                transitions=(t.name,),
            )
