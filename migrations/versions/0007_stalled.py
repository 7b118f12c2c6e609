"""index (type, state, state_entered_at) for stalled-flow counts

Revision ID: 0007_stalled
Revises: 0006_outbox
Create Date: 2026-11-28 00:50:00

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0007_stalled"
down_revision = "0006_outbox"
branch_labels = None
depends_on = None

# A flow is stalled when ``state = :s AND state_entered_at < :cutoff`` for a state with a
# timeout: a range on this index, so the admin's capped counts read at most 1,001 entries
# per state and the sweep takes the oldest stalls first without scanning the table.
INDEX = "ix_flowstate_flows_type_state_state_entered_at"


def upgrade():
    op.create_index(INDEX, "flowstate_flows", ["type", "state", "state_entered_at"])


def downgrade():
    op.drop_index(INDEX, table_name="flowstate_flows")
