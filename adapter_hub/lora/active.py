"""Which adapters act in a forward: a weighted active set for the whole batch, none, or one adapter
per batch row (`route`: many adapters served by one forward). Also which adapters train.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from adapter_hub.core.errors import AdapterNotAttachedError, AdapterStateError
from adapter_hub.lora.layer import RowPlan
from adapter_hub.lora.model import attached, lora_layers


def set_active(model: nn.Module, names: str | Sequence[str], weights: Sequence[float] | None = None) -> None:
    """Make exactly these adapters active, each output scaled by its weight (default 1)."""
    state = attached(model)
    names = [names] if isinstance(names, str) else list(names)
    weights = [1.0] * len(names) if weights is None else [float(w) for w in weights]
    if len(weights) != len(names):
        raise ValueError(f"{len(names)} adapters but {len(weights)} weights")
    unknown = [n for n in names if n not in state.configs]
    if unknown:
        raise AdapterNotAttachedError(f"unknown adapter(s) {unknown}; attached: {list(state.configs)}")
    bad = [w for w in weights if not math.isfinite(w)]
    if bad:
        raise ValueError(f"adapter weights must be finite, got {bad}")
    state.active = list(zip(names, weights))
    push_active(model)


def disable_adapters(model: nn.Module) -> None:
    """No adapter acts (merged ones stay merged: unmerge to remove them from the weights)."""
    set_active(model, [])


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    state = attached(model)
    saved = list(state.active)
    disable_adapters(model)
    try:
        yield
    finally:
        state.active = saved
        push_active(model)


def set_trainable(model: nn.Module, names: Sequence[str]) -> None:
    """Only these adapters' factors receive gradients."""
    for _, layer in lora_layers(model):
        for n in layer.lora_A:
            flag = n in names
            layer.lora_A[n].requires_grad_(flag)
            layer.lora_B[n].requires_grad_(flag)


def push_active(model: nn.Module) -> None:
    """Hand the model's active set (minus merged adapters) to every layer."""
    state = attached(model)
    live = tuple((n, w) for n, w in state.active if n not in state.merged)
    for _, layer in lora_layers(model):
        layer.active = tuple((n, w) for n, w in live if n in layer.lora_A)


@contextlib.contextmanager
def route(model: nn.Module, rows: Sequence[str | None]) -> Iterator[None]:
    """Within this block, row i of every batch uses adapter rows[i] alone (None: the bare base model).

    One forward serves many adapters: per layer, the factors are stacked once per block and each
    row's pair is gathered, so the LoRA path is two batched matmuls whatever the mix of adapters.
    """
    state = attached(model)
    if state.merged:
        raise AdapterStateError(f"cannot route while adapters are merged into the weights: {state.merged}")
    names = sorted({r for r in rows if r is not None})
    unknown = [n for n in names if n not in state.configs]
    if unknown:
        raise AdapterNotAttachedError(f"unknown adapter(s) {unknown} in routing; attached: {list(state.configs)}")
    slot = {n: i for i, n in enumerate(names)}
    layers = [layer for _, layer in lora_layers(model)]
    if model.training and any(layer.dropout.get(n, 0.0) > 0 for layer in layers for n in names):
        raise AdapterStateError("routing applies no dropout; call model.eval() or use adapters without dropout")
    index_cpu = torch.tensor([slot[r] if r is not None else len(names) for r in rows], dtype=torch.long)
    index_on: dict[torch.device, torch.Tensor] = {}  # one copy per device, not one per layer
    try:
        for layer in layers:
            A_t, B_t = layer.stacked(tuple(names))
            if A_t.device not in index_on:
                index_on[A_t.device] = index_cpu.to(A_t.device)
            layer.rows = RowPlan(A_t, B_t, index_on[A_t.device])
        yield
    finally:
        for layer in layers:
            layer.rows = None
