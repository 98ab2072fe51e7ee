"""A write generation for the SM's read caches, and the audit sequence number of each licence.

``sm_state.generation`` is incremented by every write transaction that may change what the licence
path reads (users, hosts, artefacts, images, premises, pipelines, revocations), so a worker's cached
reads are valid exactly while the generation it read them at is current. ``licences.audit_seq`` is
the sequence number of the audit entry written with the licence: audit sequence numbers are assigned
under the audit head lock and committed in order, so "licences with ``audit_seq`` above N" is a
complete change feed from which a worker keeps its count of running instances up to date.

Revision ID: 0004
Revises: 0003
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sm_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(sa.table("sm_state", sa.column("id", sa.Integer()), sa.column("generation", sa.BigInteger())),
                   [{"id": 1, "generation": 0}])
    with op.batch_alter_table("licences") as batch:
        batch.add_column(sa.Column("audit_seq", sa.BigInteger(), nullable=True))
        batch.create_index("ix_licences_audit_seq", ["audit_seq"])


def downgrade() -> None:
    with op.batch_alter_table("licences") as batch:
        batch.drop_index("ix_licences_audit_seq")
        batch.drop_column("audit_seq")
    op.drop_table("sm_state")
