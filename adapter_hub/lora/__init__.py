"""The LoRA engine on a live model: wrap layers, attach and detach named adapters, choose which act
(a weighted set, or one adapter per batch row), merge them into the weights and back out.

  layer.py    LoraLayer: a Linear/Conv1D plus any number of named adapters (ΔW = s·B·A)
  model.py    the bookkeeping kept on a model, and how an attached adapter is copied out
  attach.py   attach / detach / check_compatible, target-module selection
  active.py   set_active, disable_adapters, route (per-row adapters), set_trainable
  merge.py    merge_adapter / unmerge_adapter

Imports go down to adapter_hub.core only.
"""

from adapter_hub.lora.active import (
    adapters_disabled,
    disable_adapters,
    route,
    set_active,
    set_trainable,
)
from adapter_hub.lora.attach import attach, check_compatible, detach, resolve_targets
from adapter_hub.lora.layer import LoraLayer
from adapter_hub.lora.merge import merge_adapter, unmerge_adapter
from adapter_hub.lora.model import (
    base_identity,
    list_adapters,
    lora_layers,
    lora_parameters,
)

__all__ = [
    "LoraLayer", "attach", "detach", "set_active", "disable_adapters", "adapters_disabled", "set_trainable",
    "route", "merge_adapter", "unmerge_adapter", "lora_layers", "list_adapters", "lora_parameters",
    "check_compatible", "resolve_targets", "base_identity",
]
