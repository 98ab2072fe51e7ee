"""Covering index for counting an artefact's running instances, and artefacts' allowed hosts.

The instance limit counts distinct runtimes (host, nonce) with a live host licence of an artefact on
every licence request. Without this index SQLite reads every licence row (each holds a ~3 kB sealed
response) of the artefact; with it the count walks the index alone, in (host, nonce) order, so
DISTINCT needs no temporary table.

Revision ID: 0002
Revises: 0001
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_licences_runtime", "licences",
                    ["artefact_id", "kind", "host_id", "nonce", "expires_at", "revoked_at"])
    with op.batch_alter_table("artefacts") as batch:
        batch.add_column(sa.Column("allowed_hosts", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("artefacts") as batch:
        batch.drop_column("allowed_hosts")
    op.drop_index("ix_licences_runtime", table_name="licences")
