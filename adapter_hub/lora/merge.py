"""Folding an adapter into the base weights (W += weight·s·B·A) and taking it back out."""

from __future__ import annotations

import torch
from torch import nn

from adapter_hub.core.errors import AdapterStateError, NonFiniteError
from adapter_hub.lora.active import push_active
from adapter_hub.lora.layer import LoraLayer
from adapter_hub.lora.model import attached, lora_layers


def merge_adapter(model: nn.Module, name: str, weight: float = 1.0) -> None:
    """Add weight·s·B·A into every base weight the adapter touches; refuse if any result is non-finite.

    All layers are checked before any weight changes, so a refused merge leaves the model as it was.
    ΔW is computed in fp32 (or wider) and rounded once into the base's dtype. On a bf16/fp16 base the
    touched weights are also copied first (memory: one copy of them, in their dtype), so that
    unmerging it — as the most recent merge — restores them bit for bit; unmerging an earlier merge
    out of order subtracts instead, which leaves that dtype's rounding (~1e-3 relative for bf16).
    """
    state = attached(model)
    state.require(name)
    if name in state.merged:
        raise AdapterStateError(f"adapter {name!r} is already merged")
    layers = [(m, layer) for m, layer in lora_layers(model) if name in layer.lora_A]
    with torch.no_grad():
        for module_name, layer in layers:
            if not torch.isfinite(_shifted_weight(layer, name, weight)).all():
                raise NonFiniteError(f"merging {name!r} would put NaN/inf into {module_name}; nothing was changed")
        if layers and layers[0][1].base_layer.weight.dtype.itemsize < 4:
            state.merge_backups[name] = [layer.base_layer.weight.detach().clone() for _, layer in layers]
        for _, layer in layers:
            w = layer.base_layer.weight
            w.copy_(_shifted_weight(layer, name, weight).to(w.dtype))
    state.merged.append(name)
    state.provenance.setdefault(name, {})["merged_weight"] = weight
    push_active(model)


def unmerge_adapter(model: nn.Module, name: str) -> None:
    """Remove a merged adapter's ΔW (with the weight it was merged with) from the base weights.

    fp32 bases: subtraction, exact up to fp32 rounding. bf16/fp16 bases: the most recent merge is undone
    from its exact copy (bit-identical); an earlier one by subtraction (see merge_adapter)."""
    state = attached(model)
    if name not in state.merged:
        raise AdapterStateError(f"adapter {name!r} is not merged")
    weight = state.provenance.get(name, {}).pop("merged_weight", 1.0)
    backup = state.merge_backups.pop(name, None)
    layers = [layer for _, layer in lora_layers(model) if name in layer.lora_A]
    with torch.no_grad():
        if backup is not None and state.merged[-1] == name:
            for layer, original in zip(layers, backup):
                layer.base_layer.weight.copy_(original)
        else:
            for layer in layers:
                w = layer.base_layer.weight
                w.copy_(_shifted_weight(layer, name, -weight).to(w.dtype))
    state.merged.remove(name)
    push_active(model)


def _shifted_weight(layer: LoraLayer, name: str, weight: float) -> torch.Tensor:
    """W + weight·ΔW, computed in fp32 or wider (bf16 weights are merged without bf16 rounding of ΔW)."""
    w = layer.base_layer.weight
    acc = torch.promote_types(w.dtype, torch.float32)
    return w.to(acc) + weight * layer.delta_weight(name, acc)
