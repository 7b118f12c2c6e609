"""index props for prop search (PostgreSQL only)

Revision ID: 0004_props_index
Revises: 0003_created_index
Create Date: 2026-11-25 15:20:00

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0004_props_index"
down_revision = "0003_created_index"
branch_labels = None
depends_on = None

# The admin's prop search is ``CAST(props AS JSONB) @> :value``; this index matches that
# expression exactly. SQLite has no general-purpose JSON index, so nothing happens there.
INDEX = "ix_flowstate_flows_props"


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE INDEX {INDEX} ON flowstate_flows"
            " USING gin (CAST(props AS JSONB) jsonb_path_ops)"
        )


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX {INDEX}")
