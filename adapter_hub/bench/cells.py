"""A benchmark run's cells: one strategy trained through one task order with one seed. Which cells a
config has and in which order they run, and the packing of per-example correctness they store.
Numpy only: `bench show/compare` and the web view read cells without torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def cell_key(label: str, seed: int, order: int, single: bool) -> str:
    """`label` alone for a one-cell strategy (one seed, one order: the layout of older runs)."""
    if single:
        return label
    return f"{label}/s{seed}" + (f"/o{order + 1}" if order >= 0 else "")


@dataclasses.dataclass(frozen=True)
class CellPlan:
    label: str  # the strategy's label in the config
    key: str  # the cell's key in the run ("seq/s0", "seq/s0/o2", or the label for a one-cell strategy)
    seed: int
    order: int  # index into config.cell_orders()


def plan(config: Any) -> list[CellPlan]:
    """Every cell of a bench config, seed-major: every strategy's first seed before any second one, so a
    run stopped part-way (or resumed over several sessions) already compares all strategies on the same
    seeds. Both executors run (or submit) the cells in this order."""
    seeds, orders = config.cell_seeds(), config.cell_orders()
    single = len(seeds) == 1 and len(orders) == 1
    return [CellPlan(spec.label, cell_key(spec.label, seed, k if len(orders) > 1 else -1, single), seed, k)
            for k in range(len(orders)) for seed in seeds for spec in config.strategies]


def pack(bits: list[int]) -> dict[str, Any]:
    """0/1 list -> {"n", "hex"}: 300 examples take 75 characters."""
    return {"n": len(bits), "hex": np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()}


def unpack(packed: dict[str, Any]) -> list[int]:
    raw = np.frombuffer(bytes.fromhex(packed["hex"]), dtype=np.uint8)
    return np.unpackbits(raw)[:packed["n"]].astype(int).tolist()
