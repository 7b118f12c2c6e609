"""history rows record prop changes and their kind (transition / update)

Revision ID: 0005_history_changes
Revises: 0004_props_index
Create Date: 2026-11-28 00:45:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0005_history_changes"
down_revision = "0004_props_index"
branch_labels = None
depends_on = None


def upgrade():
    # Existing rows are transitions; the server default fills them (and keeps writers
    # that do not name the column correct).
    with op.batch_alter_table("flowstate_transitions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "kind", sa.String(length=20), server_default=sa.text("'transition'"), nullable=False
            )
        )
        batch_op.add_column(sa.Column("changes", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("flowstate_transitions", schema=None) as batch_op:
        batch_op.drop_column("changes")
        batch_op.drop_column("kind")
