"""flowstate-web: durable, explicit workflows for Flask-SQLAlchemy, with an operator's admin."""

from __future__ import annotations

from ._executor import prune_completed
from .declare import Artefact, BoundArtefact, Prop, State, Transition, transition
from .errors import (
    CallbackError,
    ConcurrentTransitionError,
    DefinitionError,
    FlowNotFoundError,
    FlowStateError,
    GuardFailedError,
    InvalidTransitionError,
    PayloadValidationError,
    UnknownArtefactError,
    UnknownFlowTypeError,
    UnknownStateError,
)
from .extension import FlowState, include_tables
from .flow import Flow, load
from .graph import ArtefactSpec, FlowGraph, PropSpec, StateSpec, TransitionSpec
from .models import ArtefactRow, FlowRow, TransitionRow, metadata
from .records import ArtefactEntry, HistoryEntry
from .registry import find_flow_type, flow_types, get_flow_type, row_problem
from .sweeper import SweepFailure, SweepReport, sweep, sweep_all
from .timeouts import FlowTimedOutError, NotStalledError, fail_stalled

__version__ = "0.1.0"

__all__ = [
    "Artefact",
    "ArtefactEntry",
    "ArtefactRow",
    "ArtefactSpec",
    "BoundArtefact",
    "CallbackError",
    "ConcurrentTransitionError",
    "DefinitionError",
    "Flow",
    "FlowGraph",
    "FlowNotFoundError",
    "FlowRow",
    "FlowState",
    "FlowStateError",
    "FlowTimedOutError",
    "GuardFailedError",
    "HistoryEntry",
    "InvalidTransitionError",
    "NotStalledError",
    "PayloadValidationError",
    "Prop",
    "PropSpec",
    "State",
    "StateSpec",
    "SweepFailure",
    "SweepReport",
    "Transition",
    "TransitionRow",
    "TransitionSpec",
    "UnknownArtefactError",
    "UnknownFlowTypeError",
    "UnknownStateError",
    "fail_stalled",
    "find_flow_type",
    "flow_types",
    "get_flow_type",
    "include_tables",
    "load",
    "metadata",
    "prune_completed",
    "row_problem",
    "sweep",
    "sweep_all",
    "transition",
]
