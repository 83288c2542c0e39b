"""Evaluation results and continual-learning benchmark runs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bench_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bench_run"),
        sa.UniqueConstraint("name", name="uq_bench_run_name"),
    )
    op.create_index("ix_bench_run_created_at", "bench_run", ["created_at"])
    op.create_table(
        "bench_step",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["bench_run.id"], name="fk_bench_step_run_id_bench_run"),
        sa.ForeignKeyConstraint(["version_id"], ["version.id"], name="fk_bench_step_version_id_version"),
        sa.PrimaryKeyConstraint("run_id", "strategy", "step", name="pk_bench_step"),
    )
    op.create_table(
        "evaluation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("dataset", sa.String(256), nullable=True),
        sa.Column("scorer", sa.String(32), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["version.id"], name="fk_evaluation_version_id_version"),
        sa.ForeignKeyConstraint(["run_id"], ["bench_run.id"], name="fk_evaluation_run_id_bench_run"),
        sa.PrimaryKeyConstraint("id", name="pk_evaluation"),
    )
    op.create_index("ix_evaluation_version_id_metric", "evaluation", ["version_id", "metric"])
    op.create_index("ix_evaluation_run_id", "evaluation", ["run_id"])


def downgrade() -> None:
    for table in ("evaluation", "bench_step", "bench_run"):
        op.drop_table(table)
