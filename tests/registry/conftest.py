"""Registry test fixtures: torch-free adapter folders, registries on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from registry.testing import snapshot as _snapshot
from registry.testing import write_adapter

PG_BIN = Path(os.environ.get("ADAPTER_HUB_PG_BIN", "/usr/lib/postgresql/15/bin"))


@pytest.fixture
def adapter_dir(tmp_path):
    """adapter_dir(seed) -> a fresh adapter folder with content determined by the seed."""
    return lambda seed=0, **kw: write_adapter(tmp_path / f"adapter-{seed}-{uuid.uuid4().hex[:6]}", seed, **kw)


@pytest.fixture
def snapshot():
    """snapshot(registry) -> everything a failed command must leave unchanged."""
    return _snapshot


@pytest.fixture
def reg(tmp_path):
    from registry import Registry

    registry = Registry.open(tmp_path / "registry")
    yield registry
    registry.close()


# ---- a throwaway PostgreSQL 15 cluster -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """Start a private PostgreSQL cluster (initdb in a temp dir, a free port, as `nobody` when root)."""
    if not (PG_BIN / "initdb").is_file():
        pytest.skip(f"PostgreSQL 15 server binaries not found in {PG_BIN}")
    pytest.importorskip("psycopg")
    base = Path(tempfile.mkdtemp(prefix="adapter-hub-pg-", dir="/tmp"))
    base.chmod(0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(base, "nobody", "nogroup")
        as_user = ["runuser", "-u", "nobody", "--"]
    data, log, port = base / "data", base / "server.log", _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.replace("postgresql+psycopg", "postgresql") + "/postgres",
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server}/{name}"
