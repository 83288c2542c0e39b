"""Initial schema: tasks, versions and their files, tags, aliases, lineage, settings.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "setting",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(2048), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_setting"),
    )
    op.create_table(
        "task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("next_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_task"),
        sa.UniqueConstraint("name", name="uq_task_name"),
    )
    op.create_table(
        "version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("base_model", sa.String(512), nullable=True),
        sa.Column("base_fingerprint", sa.String(71), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("alpha", sa.Float(), nullable=True),
        sa.Column("target_modules", sa.JSON(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("note", sa.String(4096), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"], name="fk_version_task_id_task"),
        sa.PrimaryKeyConstraint("id", name="pk_version"),
        sa.UniqueConstraint("task_id", "number", name="uq_version_task_id_number"),
    )
    op.create_index("ix_version_digest", "version", ["digest"])
    op.create_index("ix_version_base_fingerprint", "version", ["base_fingerprint"])
    op.create_index("ix_version_created_at", "version", ["created_at"])
    op.create_index("ix_version_task_id_deleted_at", "version", ["task_id", "deleted_at"])
    op.create_table(
        "version_file",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("blob", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["version.id"], name="fk_version_file_version_id_version"),
        sa.PrimaryKeyConstraint("version_id", "path", name="pk_version_file"),
    )
    op.create_index("ix_version_file_blob", "version_file", ["blob"])
    op.create_table(
        "tag",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.String(1024), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["version.id"], name="fk_tag_version_id_version"),
        sa.PrimaryKeyConstraint("version_id", "key", name="pk_tag"),
    )
    op.create_index("ix_tag_key_value", "tag", ["key", "value"])
    op.create_table(
        "alias",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"], name="fk_alias_task_id_task"),
        sa.ForeignKeyConstraint(["version_id"], ["version.id"], name="fk_alias_version_id_version"),
        sa.PrimaryKeyConstraint("task_id", "name", name="pk_alias"),
    )
    op.create_index("ix_alias_version_id", "alias", ["version_id"])
    op.create_table(
        "lineage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("parent_ref", sa.String(1024), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["child_id"], ["version.id"], name="fk_lineage_child_id_version"),
        sa.ForeignKeyConstraint(["parent_id"], ["version.id"], name="fk_lineage_parent_id_version"),
        sa.PrimaryKeyConstraint("id", name="pk_lineage"),
    )
    op.create_index("ix_lineage_child_id", "lineage", ["child_id"])
    op.create_index("ix_lineage_parent_id", "lineage", ["parent_id"])


def downgrade() -> None:
    for table in ("lineage", "alias", "tag", "version_file", "version", "task", "setting"):
        op.drop_table(table)
