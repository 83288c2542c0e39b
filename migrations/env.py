"""Alembic environment: migrations run against registry.tables' metadata (SQLAlchemy Core tables).

render_as_batch=True lets ALTERs work on SQLite (it recreates the table), relying on the naming
convention in registry.tables for constraint names. The connection comes from registry.db.upgrade
(config.attributes["connection"]), so SQLite's pragmas and BEGIN IMMEDIATE apply to migrations too.
"""

from __future__ import annotations

from alembic import context

from registry.db import make_engine
from registry.tables import metadata

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("pass the database URL: alembic -c migrations/alembic.ini -x url=sqlite:///registry.db ...")
    with make_engine(url).connect() as conn:
        _run(conn)
        conn.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
