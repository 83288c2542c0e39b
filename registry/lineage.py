"""Lineage edge kinds: what a version's recorded operation (its adapter's provenance "op", and
"chain_ops" for unsaved results it was built from) means as an edge to its parents.

The vocabulary lives with the registry, not with the code that makes adapters: it is the registry's
own schema (the `lineage.kind` column), and the registry classifies adapters written by any tool,
PEFT's included, without importing the tensor side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# When several kinds apply, the first in this order wins: a merge anywhere makes a version merged_from.
EDGE_PRECEDENCE = ("merged_from", "reduced_from", "trained_from", "imported", "derived_from")
EDGE_KIND = {"train": "trained_from", "merge": "merged_from", "compose": "merged_from", "add": "merged_from",
             "subtract": "merged_from", "linear": "merged_from", "task_arithmetic": "merged_from",
             "reduce_rank": "reduced_from", "scale": "derived_from", "negate": "derived_from", "import": "imported"}


def edge_kind(provenance: Mapping[str, Any]) -> str:
    """The lineage kind an adapter's recorded operations imply (trained_from when it records none)."""
    ops = {provenance.get("op"), *provenance.get("chain_ops", [])} - {None}
    if not ops:
        return "trained_from"
    kinds = {EDGE_KIND.get(op, "derived_from") for op in ops}
    return next(kind for kind in EDGE_PRECEDENCE if kind in kinds)
