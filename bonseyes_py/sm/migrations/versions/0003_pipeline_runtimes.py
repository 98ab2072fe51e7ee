"""The ``pipeline_runtimes`` table (per-stage progress of a started pipeline), created by alembic.

It used to be created by ``metadata.create_all`` when a worker built its app, outside the migration
history; a database that already has it from then keeps it (the table is only created if missing).

Revision ID: 0003
Revises: 0002
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "pipeline_runtimes" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "pipeline_runtimes",
        sa.Column("pipeline_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("runtime_name", sa.String(length=64), nullable=True),
        sa.Column("nonce", sa.String(length=160), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("timings", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("pipeline_id", "position"),
    )


def downgrade() -> None:
    op.drop_table("pipeline_runtimes")
