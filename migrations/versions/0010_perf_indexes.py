"""errored-only indexes made partial; an unused index dropped

Revision ID: 0010_perf_indexes
Revises: 0008_admin_indexes
Create Date: 2026-11-28 01:00:00

Every transition writes a new entry into every index of flowstate_flows (the state and
timestamps it changes are indexed, so PostgreSQL cannot make the update HOT). Two indexes
only ever serve queries on errored flows; as partial indexes (``WHERE errored``) a
transition between non-errored states no longer writes to them. One index no query used.

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010_perf_indexes"
down_revision = "0008_admin_indexes"
branch_labels = None
depends_on = None

ERRORED = {
    "sqlite_where": sa.text("errored IS 1"),
    "postgresql_where": sa.text("errored IS true"),
}


def upgrade():
    op.drop_index("ix_flowstate_flows_errored_updated_at", table_name="flowstate_flows")
    op.drop_index("ix_flowstate_flows_type_errored_id", table_name="flowstate_flows")
    op.drop_index("ix_flowstate_flows_type_errored_state_entered_at", table_name="flowstate_flows")
    op.create_index(
        "ix_flowstate_flows_type_id_errored", "flowstate_flows", ["type", "id"], **ERRORED
    )
    op.create_index(
        "ix_flowstate_flows_type_state_entered_at_errored",
        "flowstate_flows",
        ["type", "state_entered_at", "id"],
        **ERRORED,
    )


def downgrade():
    op.drop_index("ix_flowstate_flows_type_state_entered_at_errored", table_name="flowstate_flows")
    op.drop_index("ix_flowstate_flows_type_id_errored", table_name="flowstate_flows")
    op.create_index(
        "ix_flowstate_flows_type_errored_state_entered_at",
        "flowstate_flows",
        ["type", "errored", "state_entered_at"],
    )
    op.create_index(
        "ix_flowstate_flows_type_errored_id", "flowstate_flows", ["type", "errored", "id"]
    )
    op.create_index(
        "ix_flowstate_flows_errored_updated_at", "flowstate_flows", ["errored", "updated_at"]
    )
