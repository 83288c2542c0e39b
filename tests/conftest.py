"""Shared fixtures: tiny models (built once per session, copied per test), temp registries, GPU skips."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import torch

# Fewer threads than cores keeps per-test timings steady on the 2-core CI machine.
torch.set_num_threads(int(os.environ.get("ADAPTER_HUB_TEST_THREADS", "2")))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = ["tiny-llama", "tiny-gpt2"]
PG_BIN = Path(os.environ.get("ADAPTER_HUB_PG_BIN", "/usr/lib/postgresql/15/bin"))


@pytest.fixture(scope="session")
def _tiny_models():
    from adapter_hub.models.loading import load_base_model

    return {name: load_base_model(name) for name in TINY}


@pytest.fixture
def tiny_model(_tiny_models):
    """A fresh copy of a tiny model: call tiny_model('tiny-llama')."""
    return lambda name="tiny-llama": copy.deepcopy(_tiny_models[name])


@pytest.fixture(scope="session")
def tokenizer():
    from adapter_hub.models.loading import load_tokenizer

    return load_tokenizer("tiny-llama")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """No test writes to the user's real cache or registry."""
    monkeypatch.setenv("ADAPTER_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ADAPTER_HUB_HOME", str(tmp_path / "default-registry"))
    monkeypatch.delenv("ADAPTER_HUB_REGISTRY", raising=False)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: run scripts/gpu_check.sh on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
