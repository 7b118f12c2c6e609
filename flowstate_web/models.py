"""The engine's three tables, in SQLAlchemy 2.x typed style.

They live on their own ``MetaData`` (:data:`metadata`) so a host application can
add them to its own migrations; :class:`flowstate_web.FlowState` also copies them
into the host's ``db.metadata`` so ``db.create_all()`` and Flask-Migrate's
autogenerate see them without any extra set-up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: JSON on every database, JSONB on PostgreSQL (indexable, compact).
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")
#: 64-bit ids on PostgreSQL; SQLite only auto-increments a plain INTEGER primary key.
IdType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of the engine's tables (separate from the host's models)."""

    metadata = metadata


class FlowRow(Base):
    """One flow instance: its type, current state and typed props."""

    __tablename__ = "flowstate_flows"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(200))
    errored: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Number of transitions so far; (flow_id, seq) is unique in the history.
    seq: Mapped[int] = mapped_column(Integer, default=0)
    props: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: Set on entering the state, for "age in state" without reading history.
    state_entered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_errored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The error that sent the flow into its latest error state (kept after recovery).
    last_error_type: Mapped[str | None] = mapped_column(String(200))
    last_error_message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_flowstate_flows_type_state_id", "type", "state", "id"),
        Index("ix_flowstate_flows_type_errored_id", "type", "errored", "id"),
        Index("ix_flowstate_flows_type_updated_at", "type", "updated_at"),
        Index("ix_flowstate_flows_errored_updated_at", "errored", "updated_at"),
        Index("ix_flowstate_flows_completed_at", "completed_at"),
    )


class TransitionRow(Base):
    """One history entry: a transition that committed."""

    __tablename__ = "flowstate_transitions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    flow_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("flowstate_flows.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    from_state: Mapped[str] = mapped_column(String(200))
    to_state: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_traceback: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    # The database itself forbids two transitions from the same step of one flow.
    __table_args__ = (UniqueConstraint("flow_id", "seq"),)


class ArtefactRow(Base):
    """A typed payload persisted by a transition."""

    __tablename__ = "flowstate_artefacts"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    flow_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("flowstate_flows.id", ondelete="CASCADE")
    )
    transition_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("flowstate_transitions.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(200))
    payload: Mapped[Any] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_flowstate_artefacts_flow_id_name_id", "flow_id", "name", "id"),
        Index("ix_flowstate_artefacts_transition_id", "transition_id"),
    )


flows = cast(Table, FlowRow.__table__)
transitions = cast(Table, TransitionRow.__table__)
artefacts = cast(Table, ArtefactRow.__table__)
