"""per-state counters kept by triggers; index for "errored the longest"

Revision ID: 0002_state_counts
Revises: 0001_initial
Create Date: 2026-12-02 10:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

from flowstate_web.counters import install_counters, uninstall_counters

# revision identifiers, used by Alembic.
revision = "0002_state_counts"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "flowstate_state_counts",
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=200), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("errored", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("type", "state", "slot", name=op.f("pk_flowstate_state_counts")),
    )
    with op.batch_alter_table("flowstate_flows", schema=None) as batch_op:
        batch_op.create_index(
            "ix_flowstate_flows_type_errored_state_entered_at",
            ["type", "errored", "state_entered_at"],
            unique=False,
        )
    # Triggers on flowstate_flows + a backfill of the existing flows, under a lock.
    install_counters(op)


def downgrade():
    uninstall_counters(op)
    with op.batch_alter_table("flowstate_flows", schema=None) as batch_op:
        batch_op.drop_index("ix_flowstate_flows_type_errored_state_entered_at")
    op.drop_table("flowstate_state_counts")
