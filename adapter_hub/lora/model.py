"""What the engine keeps on a model: one `AttachedAdapters` object (configs, the active and merged
sets, the base model's identity, provenance) under core.adapter.ATTACHED, and the ways to find the
wrapped layers. `extract` is how `LoraAdapter.from_model` copies an attached adapter out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from adapter_hub.core.adapter import ATTACHED, LoraAdapter, config_for_modules
from adapter_hub.core.config import LoraConfig
from adapter_hub.core.errors import AdapterNotAttachedError, AdapterStateError
from adapter_hub.core.factors import ModuleFactors
from adapter_hub.core.identity import BaseModelIdentity, compute_identity
from adapter_hub.lora.layer import LoraLayer


@dataclass
class AttachedAdapters:
    configs: dict[str, LoraConfig] = field(default_factory=dict)
    identity: BaseModelIdentity | None = None  # computed once, before any merge can change weights
    active: list[tuple[str, float]] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    # Exact copies of the base weights a merge into a sub-fp32 (bf16/fp16) base changed, per adapter:
    # unmerging the most recent merge restores them bit for bit (subtracting would leave rounding).
    merge_backups: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    provenance: dict[str, dict] = field(default_factory=dict)  # per adapter: where it came from

    def require(self, name: str) -> None:
        if name not in self.configs:
            raise AdapterNotAttachedError(f"no adapter named {name!r} is attached (attached: {list(self.configs)})")

    def extract(self, model: nn.Module, name: str) -> LoraAdapter:
        """Adapter `name`'s factors copied out of `model` (to the CPU), with its config and identity."""
        self.require(name)
        modules, fan_in_fan_out = {}, False
        for module_name, layer in lora_layers(model):
            if name in layer.lora_A:
                modules[module_name] = ModuleFactors(
                    layer.lora_A[name].detach().to("cpu", copy=True), layer.lora_B[name].detach().to("cpu", copy=True)
                )
                fan_in_fan_out |= layer.fan_in_fan_out
        config = config_for_modules(self.configs[name], modules)
        return LoraAdapter(modules, config, base_identity(model), fan_in_fan_out, dict(self.provenance.get(name, {})))


def attached(model: nn.Module) -> AttachedAdapters:
    """The model's bookkeeping, created empty on first use."""
    found = getattr(model, ATTACHED, None)
    if found is None:
        found = AttachedAdapters()
        object.__setattr__(model, ATTACHED, found)  # not a submodule: plain attribute, no state_dict entry
    return found


def forget(model: nn.Module) -> None:
    """Drop the bookkeeping: nothing is attached and the model is exactly the original again."""
    model.__dict__.pop(ATTACHED, None)


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLayer]]:
    """(module name as in the bare model, layer) for every wrapped layer."""
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


def list_adapters(model: nn.Module) -> list[str]:
    found = getattr(model, ATTACHED, None)
    return list(found.configs) if found else []


def base_identity(model: nn.Module) -> BaseModelIdentity:
    state = attached(model)
    if state.identity is None:
        if state.merged:
            raise AdapterStateError("cannot fingerprint a model with merged adapters; unmerge first")
        state.identity = compute_identity(model)
    return state.identity


def lora_parameters(model: nn.Module, names: list[str] | tuple[str, ...] | None = None) -> list[nn.Parameter]:
    """The A and B parameters of the given adapters (all when None), in a stable order."""
    params = []
    for _, layer in lora_layers(model):
        for n in layer.lora_A:
            if names is None or n in names:
                params += [layer.lora_A[n], layer.lora_B[n]]
    return params
