"""Taking cells out of an exported run, so that resuming it trains them again.

A run resumes by keeping every cell it has results for. When a cell's results are known to be wrong
(made by code with a bug since fixed, as the regime run's cells that restored an untrained state),
the way to recompute just those cells is: export the run, drop them, import the rest into a fresh
registry, `bench run` the same config. The fresh registry matters: a cell's registered steps are
found again by its run tag on resume, and the export carries results, not adapters, so nothing of
the dropped cells can come back. Numpy only, like the rest of what `bench import` reads.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from adapter_hub.bench.summary import summarise


def without_cells(document: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """A copy of an exported run (`bench export`'s document) without the cells `keys` ("seq/s1", ...):
    their results and recorded steps gone, every summary recomputed from the cells that stay, and the
    status "running" (a run with cells to do is not done). An unknown key is refused, naming it."""
    pruned = copy.deepcopy(document)
    strategies = (pruned.get("results") or {}).get("strategies") or {}
    present = {key: label for label, entry in strategies.items() for key in (entry.get("cells") or {})}
    for key in keys:
        if key not in present:
            shown = ", ".join(sorted(present)) or "none"
            raise ValueError(f"cell {key!r} is not in this run (its cells: {shown})")
    for key in keys:
        del strategies[present[key]]["cells"][key]
    pruned["steps"] = [s for s in pruned.get("steps") or [] if s.get("strategy") not in set(keys)]
    if keys:
        summarise(pruned["results"], final=True)
        if pruned.get("status") == "done":
            pruned["status"] = "running"
    return pruned
