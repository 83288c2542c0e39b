"""bench_cell: one row per benchmark cell (strategy x seed x order) with its state and its lease, so
cells can run in several processes or machines (the Ray executor) and never be run twice at once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bench_cell",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("cell", sa.String(160), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(160), nullable=True),
        sa.Column("node", sa.String(160), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["bench_run.id"], name="fk_bench_cell_run_id_bench_run"),
        sa.PrimaryKeyConstraint("run_id", "cell", name="pk_bench_cell"),
    )


def downgrade() -> None:
    op.drop_table("bench_cell")
