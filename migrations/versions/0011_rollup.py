"""history rollup for the heat map and metrics: cursor, edge counts, time-in-state histograms

Revision ID: 0011_rollup
Revises: 0010_perf_indexes
Create Date: 2026-11-28 01:15:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0011_rollup"
down_revision = "0010_perf_indexes"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "flowstate_rollup_cursor",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_id", ID, nullable=False),
        sa.Column("gaps", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flowstate_rollup_cursor")),
    )
    op.create_table(
        "flowstate_rollup_edges",
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("grain", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("period", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("from_state", sa.String(length=200), nullable=False),
        sa.Column("to_state", sa.String(length=200), nullable=False),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "type",
            "grain",
            "period",
            "name",
            "from_state",
            "to_state",
            "actor_kind",
            name=op.f("pk_flowstate_rollup_edges"),
        ),
    )
    op.create_table(
        "flowstate_rollup_dwell",
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("grain", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("period", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=200), nullable=False),
        sa.Column("bin", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "type", "grain", "period", "state", "bin", name=op.f("pk_flowstate_rollup_dwell")
        ),
    )
    # Retention deletes by (grain, period) across types.
    for table in ("flowstate_rollup_edges", "flowstate_rollup_dwell"):
        op.create_index(f"ix_{table}_grain_period", table, ["grain", "period"])


def downgrade():
    op.drop_table("flowstate_rollup_dwell")
    op.drop_table("flowstate_rollup_edges")
    op.drop_table("flowstate_rollup_cursor")
