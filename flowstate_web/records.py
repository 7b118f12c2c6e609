"""Read-only records the engine returns: history entries and artefact versions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime (SQLite hands back naive ones)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    """Return :func:`utc` of ``value``, passing ``None`` through."""
    return None if value is None else utc(value)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One history row of one flow: a transition, or an update of its props.

    ``kind`` is ``"transition"`` (``name`` is the transition; ``to_state`` may equal
    ``from_state``) or ``"update"`` (``flow.save()``: ``name`` is ``"save"``, the state did
    not change). ``changes`` is ``{prop: {"old": ..., "new": ...}}`` for the props this
    entry wrote (values over :data:`~flowstate_web._props.MAX_CHANGE_VALUE` characters
    of JSON are replaced by ``{"truncated": <JSON prefix>, "chars": <full length>}``), or
    ``None``.
    """

    id: int
    flow_id: int
    seq: int
    name: str
    from_state: str
    to_state: str
    created_at: datetime
    actor: str | None = None
    reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    meta: dict[str, Any] | None = None
    kind: str = "transition"
    changes: dict[str, Any] | None = None

    @property
    def is_update(self) -> bool:
        """Return whether this entry saved props without a transition (``flow.save()``)."""
        return self.kind == "update"

    @classmethod
    def from_row(cls, row: Row[Any]) -> HistoryEntry:
        """Build an entry from a ``flowstate_transitions`` row."""
        m = row._mapping
        return cls(
            id=m["id"],
            flow_id=m["flow_id"],
            seq=m["seq"],
            name=m["name"],
            from_state=m["from_state"],
            to_state=m["to_state"],
            created_at=utc(m["created_at"]),
            actor=m["actor"],
            reason=m["reason"],
            error_type=m["error_type"],
            error_message=m["error_message"],
            error_traceback=m["error_traceback"],
            meta=m["meta"],
            kind=m["kind"],
            changes=m["changes"],
        )


@dataclass(frozen=True, slots=True)
class ArtefactEntry:
    """One persisted version of an artefact, linked to the transition that wrote it."""

    id: int
    flow_id: int
    transition_id: int
    name: str
    payload: Any
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> ArtefactEntry:
        """Build an entry from a ``flowstate_artefacts`` row."""
        m = row._mapping
        return cls(
            id=m["id"],
            flow_id=m["flow_id"],
            transition_id=m["transition_id"],
            name=m["name"],
            payload=m["payload"],
            created_at=utc(m["created_at"]),
        )
