"""Every error the engine raises: one base class, messages an operator can act on."""

from __future__ import annotations


class FlowStateError(Exception):
    """Base class of every flowstate-web error."""


class DefinitionError(FlowStateError):
    """A flow class is declared wrongly (raised when the class is defined)."""


class FlowNotFoundError(FlowStateError):
    """No flow row has this id (or it belongs to another flow type)."""

    def __init__(self, flow_type: str, flow_id: object) -> None:
        super().__init__(f"{flow_type} #{flow_id} does not exist")
        self.flow_type = flow_type
        self.flow_id = flow_id


class UnknownStateError(DefinitionError):
    """A transition names a state that is not declared on the flow class."""


class UnknownFlowTypeError(FlowStateError):
    """No registered flow class has this type name."""


class InvalidTransitionError(FlowStateError):
    """The flow is not in one of the transition's source states."""

    def __init__(
        self,
        flow_type: str,
        flow_id: object,
        transition: str,
        current: str,
        sources: tuple[str, ...],
        target: str,
    ) -> None:
        super().__init__(
            f"{flow_type} #{flow_id}: cannot run {transition!r} from state {current!r}"
            f" (allowed from {', '.join(repr(s) for s in sources)} -> {target!r})"
        )
        self.flow_type = flow_type
        self.flow_id = flow_id
        self.transition = transition
        self.current = current
        self.sources = sources
        self.target = target


class ConcurrentTransitionError(InvalidTransitionError):
    """Another transition of the same flow committed the same step first.

    The database's unique ``(flow_id, seq)`` refused this one; nothing of it was written.
    Re-read the flow (``refresh()``) and decide again.
    """

    def __init__(
        self,
        flow_type: str,
        flow_id: object,
        transition: str,
        current: str,
        sources: tuple[str, ...],
        target: str,
        seq: int,
    ) -> None:
        super().__init__(flow_type, flow_id, transition, current, sources, target)
        self.seq = seq
        self.args = (
            f"{flow_type} #{flow_id}: another transition got there first: step {seq} of the"
            f" flow was already written when {transition!r} ({current!r} -> {target!r}) tried"
            " to commit it; nothing of this one was written (refresh the flow and retry)",
        )


class GuardFailedError(FlowStateError):
    """The transition's guard returned false on the freshly locked flow."""

    def __init__(
        self, flow_type: str, flow_id: object, transition: str, current: str, target: str
    ) -> None:
        super().__init__(
            f"{flow_type} #{flow_id}: guard of {transition!r} refused {current!r} -> {target!r}"
        )
        self.flow_type = flow_type
        self.flow_id = flow_id
        self.transition = transition
        self.current = current
        self.target = target


class PayloadValidationError(FlowStateError):
    """A prop or artefact value is missing, unknown, ``None`` or of the wrong type.

    ``problems`` lists every problem found as ``(name, message)`` pairs (one check of several
    props reports all of them at once); the message joins them.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems: list[tuple[str, str]] = problems if problems is not None else []


class UnknownArtefactError(DefinitionError):
    """An artefact name is not declared on the flow class.

    Raised when a class is defined (``persists=`` names no artefact) and when an artefact
    is read by a name the class does not declare.
    """


class CallbackError(FlowStateError):
    """One or more after-commit callbacks raised; the transition itself committed."""

    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        lines = "; ".join(f"{where}: {type(exc).__name__}: {exc}" for where, exc in failures)
        super().__init__(f"after-commit callback(s) failed (the transition committed): {lines}")
        self.failures = failures
        if failures:
            # ``raise CallbackError(...)`` keeps an explicitly set cause: the first failure.
            self.__cause__ = failures[0][1]
