"""outbox of job hand-offs

Revision ID: 0006_outbox
Revises: 0005_history_changes
Create Date: 2026-11-28 00:40:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0006_outbox"
down_revision = "0005_history_changes"
branch_labels = None
depends_on = None

IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "flowstate_outbox",
        sa.Column("id", IdType, autoincrement=True, nullable=False),
        sa.Column("flow_id", IdType, nullable=False),
        sa.Column("flow_type", sa.String(length=200), nullable=False),
        sa.Column("transition_id", IdType, nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("job", sa.String(length=200), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("dispatch_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["flow_id"],
            ["flowstate_flows.id"],
            name=op.f("fk_flowstate_outbox_flow_id_flowstate_flows"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["transition_id"],
            ["flowstate_transitions.id"],
            name=op.f("fk_flowstate_outbox_transition_id_flowstate_transitions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flowstate_outbox")),
        sa.UniqueConstraint("dispatch_id", name=op.f("uq_flowstate_outbox_dispatch_id")),
    )
    op.create_index("ix_flowstate_outbox_flow_id_id", "flowstate_outbox", ["flow_id", "id"])
    op.create_index("ix_flowstate_outbox_transition_id", "flowstate_outbox", ["transition_id"])
    op.create_index(
        "ix_flowstate_outbox_unsent",
        "flowstate_outbox",
        ["available_at", "id"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )


def downgrade():
    op.drop_index("ix_flowstate_outbox_unsent", table_name="flowstate_outbox")
    op.drop_index("ix_flowstate_outbox_transition_id", table_name="flowstate_outbox")
    op.drop_index("ix_flowstate_outbox_flow_id_id", table_name="flowstate_outbox")
    op.drop_table("flowstate_outbox")
