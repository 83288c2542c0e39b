"""Putting adapters on a model and taking them off: choosing the target modules, wrapping them in
LoraLayers, checking a saved adapter against the model before anything changes, detaching.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.core.config import LoraConfig
from adapter_hub.core.errors import IncompatibleAdaptersError, TargetModuleError
from adapter_hub.core.identity import base_parameters
from adapter_hub.lora.active import set_active
from adapter_hub.lora.layer import LoraLayer, is_wrappable, layer_fans
from adapter_hub.lora.merge import unmerge_adapter
from adapter_hub.lora.model import (
    attached,
    base_identity,
    forget,
    list_adapters,
    lora_layers,
)


def _output_head_names(model: nn.Module) -> set[str]:
    names = {"lm_head"}
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is not None:
        for name, module in model.named_modules():
            if module is head or (isinstance(module, LoraLayer) and module.base_layer is head):
                names.add(name)
    return names


def resolve_targets(model: nn.Module, target_modules: str | Sequence[str]) -> list[str]:
    """Module names selected by "all-linear", a regex (full match), or a list of names/suffixes."""
    modules = dict(model.named_modules())
    candidates = {
        name: (mod.base_layer if isinstance(mod, LoraLayer) else mod)
        for name, mod in modules.items()
        if not name.endswith(".base_layer") and (isinstance(mod, LoraLayer) or is_wrappable(mod))
    }
    if target_modules == "all-linear":
        heads = _output_head_names(model)
        chosen = [n for n in candidates if n not in heads and n.rsplit(".", 1)[-1] not in heads]
        if not chosen:
            raise TargetModuleError("target_modules='all-linear' found no linear layer besides the output head")
        return chosen
    if isinstance(target_modules, str):
        pattern = re.compile(target_modules)
        matched = [n for n in modules if n and pattern.fullmatch(n) and not n.endswith(".base_layer")]
        if not matched:
            raise TargetModuleError(f"target_modules regex {target_modules!r} matched no module of the model")
        _check_wrappable(matched, modules)
        return matched
    chosen: list[str] = []
    for target in target_modules:
        hits = [n for n in modules if (n == target or n.endswith("." + target)) and not n.endswith(".base_layer")]
        if not hits:
            raise TargetModuleError(
                f"target module {target!r} not found in the model "
                f"(linear layers look like {sorted(candidates)[:3]}...)"
            )
        _check_wrappable(hits, modules)
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _check_wrappable(names: Sequence[str], modules: dict[str, nn.Module]) -> None:
    for name in names:
        mod = modules[name]
        if not (isinstance(mod, LoraLayer) or is_wrappable(mod)):
            raise TargetModuleError(
                f"module {name!r} is a {type(mod).__name__}; LoRA wraps only nn.Linear and GPT-2 Conv1D"
            )


def _check_name(model: nn.Module, name: str) -> None:
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"adapter name must be a non-empty string without '.', got {name!r}")
    if hasattr(nn.ParameterDict(), name):  # the name becomes an attribute of the layers' ParameterDicts
        raise ValueError(f"adapter name {name!r} is reserved (it clashes with a torch.nn.Module attribute); "
                         f"pick another name")
    if name in list_adapters(model):
        raise ValueError(f"an adapter named {name!r} is already attached; detach it or pick another name")


def _wrap(model: nn.Module, module_name: str) -> LoraLayer:
    module = model.get_submodule(module_name)
    if isinstance(module, LoraLayer):
        return module
    parent_name, _, child = module_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    layer = LoraLayer(module)
    setattr(parent, child, layer)
    return layer


def _unwrap(model: nn.Module, module_name: str, layer: LoraLayer) -> None:
    parent_name, _, child = module_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, layer.base_layer)


def _init_factors(r: int, fan_in: int, fan_out: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    # PEFT's default: A as nn.Linear's own init (Kaiming-uniform, a=√5), B zero, so ΔW = 0 at start.
    A = torch.empty(r, fan_in)
    nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)
    return A, torch.zeros(fan_out, r)


def attach(
    model: nn.Module,
    adapter: LoraConfig | LoraAdapter,
    name: str = "default",
    *,
    activate: Literal["only", "add", "none"] = "only",
    trainable: bool = True,
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Attach a new adapter (from a LoraConfig) or a saved one (a LoraAdapter) under `name`.

    Everything is checked before the model is touched: the name, the target modules, and for a
    LoraAdapter the base-model identity and every factor's shape. Base parameters are frozen.
    activate: "only" makes this the single active adapter, "add" stacks it on those already active.
    """
    _check_name(model, name)
    modules = dict(model.named_modules())
    if isinstance(adapter, LoraConfig):
        config = adapter
        targets = resolve_targets(model, config.target_modules)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        factors = {}
        for target in targets:
            mod = modules[target]
            fan_in, fan_out = layer_fans(mod.base_layer if isinstance(mod, LoraLayer) else mod)
            factors[target] = _init_factors(config.rank_for(target), fan_in, fan_out, generator)
        provenance: dict = {}
    elif isinstance(adapter, LoraAdapter):
        config = adapter.config
        check_compatible(model, adapter)
        factors = {m: (f.A.detach().clone(), f.B.detach().clone()) for m, f in adapter.modules.items()}
        provenance = dict(adapter.provenance)
    else:
        raise TypeError(f"attach() takes a LoraConfig or a LoraAdapter, got {type(adapter).__name__}")

    state = attached(model)
    base_identity(model)  # fingerprint the untouched base before the first wrap
    for _, param in base_parameters(model):  # the base is frozen; other adapters keep their flags
        param.requires_grad_(False)
    for target, (A, B) in factors.items():
        layer = _wrap(model, target)
        device = layer.base_layer.weight.device
        layer.add(name, A.to(device=device, dtype=dtype), B.to(device=device, dtype=dtype),
                  config.scaling_for(target), config.dropout)
        layer.lora_A[name].requires_grad_(trainable)
        layer.lora_B[name].requires_grad_(trainable)
    state.configs[name] = config
    state.provenance[name] = provenance
    if activate == "only":
        set_active(model, [name])
    elif activate == "add":
        set_active(model, [n for n, _ in state.active] + [name], [w for _, w in state.active] + [1.0])
    return model


def check_compatible(model: nn.Module, adapter: LoraAdapter) -> None:
    """Raise IncompatibleAdaptersError unless `adapter` fits `model` (identity, modules, shapes)."""
    if adapter.base_model is not None and adapter.base_model.fingerprint:
        why = adapter.base_model.mismatch(base_identity(model))
        if why:
            raise IncompatibleAdaptersError(f"adapter was trained on another base model: {why}")
    modules = dict(model.named_modules())
    problems = []
    for target, f in adapter.modules.items():
        mod = modules.get(target)
        if mod is None or not (isinstance(mod, LoraLayer) or is_wrappable(mod)):
            found = "missing" if mod is None else type(mod).__name__
            problems.append(f"{target}: not a linear layer of this model ({found})")
            continue
        fan_in, fan_out = layer_fans(mod.base_layer if isinstance(mod, LoraLayer) else mod)
        if f.A.shape[1] != fan_in or f.B.shape[0] != fan_out:
            problems.append(
                f"{target}: adapter maps {f.A.shape[1]}->{f.B.shape[0]} but the layer maps {fan_in}->{fan_out}"
            )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise IncompatibleAdaptersError(f"adapter does not fit this model: {shown}")


def detach(model: nn.Module, name: str | None = None) -> nn.Module:
    """Remove one adapter (or all, name=None), unmerging first; layers left empty are unwrapped."""
    state = attached(model)
    names = list(state.configs) if name is None else [name]
    for n in names:
        state.require(n)
    for n in names:
        if n in state.merged:
            unmerge_adapter(model, n)
    for module_name, layer in list(lora_layers(model)):
        for n in names:
            if n in layer.lora_A:
                layer.remove(n)
        if not layer.lora_A:
            _unwrap(model, module_name, layer)
    for n in names:
        del state.configs[n]
        state.provenance.pop(n, None)
    state.active = [(n, w) for n, w in state.active if n not in names]
    if not state.configs:
        forget(model)  # nothing attached: the model is exactly the original again
    return model
