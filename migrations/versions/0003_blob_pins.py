"""Blob pins: registrations in flight pin the blobs they store, so gc and fsck --repair cannot delete them;
and evaluation.context: how a version was used when it was scored (e.g. inside a routed per_task system).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_pin",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(96), nullable=False),
        sa.Column("blob", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_blob_pin"),
    )
    op.create_index("ix_blob_pin_token", "blob_pin", ["token"])
    op.create_index("ix_blob_pin_blob", "blob_pin", ["blob"])
    with op.batch_alter_table("evaluation") as batch:
        batch.add_column(sa.Column("context", sa.String(256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evaluation") as batch:
        batch.drop_column("context")
    op.drop_table("blob_pin")
