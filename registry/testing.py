"""Torch-free helpers for tests: valid PEFT LoRA folders made with numpy, and registry snapshots.

Used by this project's tests, benchmarks and worker subprocesses; useful in users' own tests too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

MODULES = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.mlp.down_proj"]


def write_adapter(folder: Path, seed: int = 0, r: int = 2, dim: int = 16, base: str = "tiny-llama",
                  fingerprint: str = "sha256:" + "ab" * 32) -> Path:
    """A valid PEFT LoRA folder made with numpy only (registry tests never need torch)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for m in MODULES:
        tensors[f"base_model.model.{m}.lora_A.weight"] = rng.standard_normal((r, dim)).astype(np.float32)
        tensors[f"base_model.model.{m}.lora_B.weight"] = rng.standard_normal((dim, r)).astype(np.float32)
    identity = {"name": base, "fingerprint": fingerprint, "probe": [0.1, 0.2]}
    save_file(tensors, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt", "adapter_hub.base_model": json.dumps(identity)})
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": MODULES,
        "base_model_name_or_path": base, "rank_pattern": {}, "alpha_pattern": {},
    }))
    return folder


def snapshot(registry) -> tuple:
    """Everything a failed command must leave unchanged: table contents and stored blobs."""
    from sqlalchemy import select

    from registry.tables import metadata

    with registry.engine.connect() as conn:  # every table the registry declares, so none is forgotten
        rows = tuple(tuple(map(tuple, conn.execute(select(t).order_by(*t.primary_key.columns)).all()))
                     for t in metadata.sorted_tables)
    return rows, tuple(sorted(d for d, _ in registry.store.iter_blobs()))


