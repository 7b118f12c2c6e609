"""index flows by type, state or errored, and creation or update time (admin date ranges)

Revision ID: 0008_admin_indexes
Revises: 0007_stalled
Create Date: 2026-11-28 00:55:00

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0008_admin_indexes"
down_revision = "0007_stalled"
branch_labels = None
depends_on = None

# A created (or updated) range combined with a state or errored filter: the list and its
# capped count start at the window of that state instead of reading every flow in it.
# (errored + updated range already has ix_flowstate_flows_errored_updated_at.)
INDEXES = {
    "ix_flowstate_flows_type_state_created_at": ["type", "state", "created_at"],
    "ix_flowstate_flows_type_errored_created_at": ["type", "errored", "created_at"],
    "ix_flowstate_flows_type_state_updated_at": ["type", "state", "updated_at"],
}


def upgrade():
    with op.batch_alter_table("flowstate_flows", schema=None) as batch_op:
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, unique=False)


def downgrade():
    with op.batch_alter_table("flowstate_flows", schema=None) as batch_op:
        for name in INDEXES:
            batch_op.drop_index(name)
