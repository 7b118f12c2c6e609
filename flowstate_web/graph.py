"""The declared graph of a flow type: pure data, built from the class, never from running it.

Diagrams, the admin's retry buttons and validation all read this one structure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class StateSpec:
    """A declared state."""

    name: str
    error: bool = False
    final: bool = False
    initial: bool = False
    #: How long a flow may stay here before it is stalled (the type's default applied).
    timeout: timedelta | None = None
    #: The transition the timeout sweep runs on stalled flows of this state, if any.
    on_timeout: str | None = None


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    """A declared transition: every fact about it that is known without running it."""

    name: str
    sources: tuple[str, ...]
    target: str
    guard: str | None = None
    persists: str | None = None
    after: tuple[str, ...] = ()
    retry: bool = False
    doc: str | None = None
    #: Jobs handed to the queue through the outbox when this transition commits.
    enqueue: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ArtefactSpec:
    """A declared artefact: a named, typed payload that transitions persist."""

    name: str
    type_name: str


@dataclass(frozen=True, slots=True)
class PropSpec:
    """A declared prop: a named, typed field of the flow's payload."""

    name: str
    type_name: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class FlowGraph:
    """The whole declared shape of a flow type."""

    name: str
    states: tuple[StateSpec, ...]
    transitions: tuple[TransitionSpec, ...]
    artefacts: tuple[ArtefactSpec, ...] = ()
    props: tuple[PropSpec, ...] = ()
    doc: str | None = None
    _by_name: dict[str, StateSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({s.name: s for s in self.states})

    @property
    def initial(self) -> str:
        """Return the name of the initial state."""
        return next(s.name for s in self.states if s.initial)

    @property
    def error_states(self) -> tuple[str, ...]:
        """Return the names of the error states, in declaration order."""
        return tuple(s.name for s in self.states if s.error)

    @property
    def final_states(self) -> tuple[str, ...]:
        """Return the names of the final (completed) states, in declaration order."""
        return tuple(s.name for s in self.states if s.final)

    @property
    def state_names(self) -> tuple[str, ...]:
        """Return every state name, in declaration order."""
        return tuple(s.name for s in self.states)

    def state(self, name: str) -> StateSpec | None:
        """Return the state called ``name``, or ``None`` when it is not declared."""
        return self._by_name.get(name)

    def transition(self, name: str) -> TransitionSpec | None:
        """Return the transition called ``name``, or ``None``."""
        return next((t for t in self.transitions if t.name == name), None)

    def transitions_from(self, state: str) -> tuple[TransitionSpec, ...]:
        """Return the transitions whose sources include ``state``."""
        return tuple(t for t in self.transitions if state in t.sources)

    def retry_transitions_from(self, state: str) -> tuple[TransitionSpec, ...]:
        """Return the retry transitions that leave ``state``."""
        return tuple(t for t in self.transitions if t.retry and state in t.sources)

    @property
    def timed_states(self) -> tuple[StateSpec, ...]:
        """Return the states that declare a timeout (flows can be stalled in them)."""
        return tuple(s for s in self.states if s.timeout is not None)

    def handoff_into(self, state: str) -> tuple[str, ...]:
        """Return the jobs that the transitions into ``state`` hand to the queue (no repeats)."""
        jobs = (j for t in self.transitions if t.target == state for j in t.enqueue)
        return tuple(dict.fromkeys(jobs))

    def dead_ends(self) -> tuple[str, ...]:
        """Return states with no way out that are not final (likely modelling mistakes)."""
        leaving = {s for t in self.transitions for s in t.sources}
        return tuple(s.name for s in self.states if not s.final and s.name not in leaving)

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready description (stable key order)."""
        return {
            "name": self.name,
            "states": [
                {"name": s.name, "error": s.error, "final": s.final, "initial": s.initial}
                | (
                    {}
                    if s.timeout is None
                    else {"timeout": s.timeout.total_seconds(), "on_timeout": s.on_timeout}
                )
                for s in self.states
            ],
            "transitions": [
                {
                    "name": t.name,
                    "sources": list(t.sources),
                    "target": t.target,
                    "guard": t.guard,
                    "persists": t.persists,
                    "after": list(t.after),
                    "retry": t.retry,
                    # Only when set, so graphs without hand-offs keep their content hash.
                    **({"enqueue": list(t.enqueue)} if t.enqueue else {}),
                }
                for t in self.transitions
            ],
            "artefacts": [{"name": a.name, "type": a.type_name} for a in self.artefacts],
            "props": [
                {"name": p.name, "type": p.type_name, "required": p.required} for p in self.props
            ],
        }

    def content_hash(self) -> str:
        """Return a hash of the graph's content: same declaration, same hash."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()
