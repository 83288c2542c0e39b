"""Frozen adapters that act beside the one being trained, run as ONE LoRA branch.

inc, O-LoRA, N-LoRA and InfLoRA keep every earlier task's component active and frozen while the new
one trains. Run one by one, k components cost k pairs of small matmuls (and their backward) in every
targeted layer, so a step grows with the task index: on SmolLM2 (bf16, 96 tokens, batch 8) a step
beside 3 components took 2.21x the step with none (benchmarks/bench_frozen_sum.py). Their exact sum (ops.add concatenates the ranks, the scalings folded
in) is one adapter of rank Σr whose output equals the sum of theirs, so the forward and the input
gradient are the same up to rounding at a constant two matmuls per layer. The components stay
attached, untouched, for what reads them (O-LoRA's orthogonality term, N-LoRA's collision, the
state the step registers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from torch import nn

from adapter_hub import ops
from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.lora import attach, detach, lora_layers, set_active
from adapter_hub.lora.model import attached

FROZEN_SUM = "_frozen_sum"


def frozen_active(model: nn.Module, trained: Sequence[str]) -> list[str]:
    """The active adapters that are not being trained: what would run as one summed branch."""
    return [n for n, _ in attached(model).active if n not in trained]


def fusable(model: nn.Module, trained: Sequence[str]) -> bool:
    """Whether running the frozen active adapters (all active but `trained`) as their sum computes what
    running them one by one does: at least two, each at weight 1, none merged into the base weights,
    and none with dropout (one branch would draw one dropout mask where separate branches draw one each)."""
    state = attached(model)
    weights = dict(state.active)
    frozen = frozen_active(model, trained)
    return (len(frozen) >= 2
            and all(weights.get(n) == 1.0 for n in frozen)
            and not any(n in state.merged for n in frozen)
            and all(state.configs[n].dropout == 0.0 for n in frozen))


@contextlib.contextmanager
def frozen_as_one(model: nn.Module, trained: Sequence[str]) -> Iterator[bool]:
    """Run the model's active adapters that are not `trained` as one summed branch for the duration;
    on exit the summed branch is gone and the active set is as it was. Yields whether it fused (not
    when `fusable` says the sum would compute something else)."""
    before = list(attached(model).active)
    if not fusable(model, trained):
        yield False
        return
    frozen = frozen_active(model, trained)
    total = ops.add(*[LoraAdapter.from_model(model, n) for n in frozen], allow_partial=True)  # absent = 0
    dtype = next(layer.lora_A[frozen[0]].dtype for _, layer in lora_layers(model) if frozen[0] in layer.lora_A)
    attach(model, total, name=FROZEN_SUM, activate="none", trainable=False, dtype=dtype)
    try:
        kept = [(n, w) for n, w in before if n in trained]
        set_active(model, [FROZEN_SUM, *(n for n, _ in kept)], [1.0, *(w for _, w in kept)])
        yield True
    finally:
        detach(model, FROZEN_SUM)
        set_active(model, [n for n, _ in before], [w for _, w in before])
