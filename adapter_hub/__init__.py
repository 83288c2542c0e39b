"""adapter-hub: continual learning with LoRA adapters.

Attributes are imported lazily (PEP 562) so that `import adapter_hub` — and therefore the CLI's
registry commands — never pays the ~6 s torch + transformers import unless tensors are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "LoraConfig": "adapter_hub.core.config",
    "LoraAdapter": "adapter_hub.core.adapter",
    "attach": "adapter_hub.lora",
    "detach": "adapter_hub.lora",
    "set_active": "adapter_hub.lora",
    "disable_adapters": "adapter_hub.lora",
    "route": "adapter_hub.lora",
    "merge_adapter": "adapter_hub.lora",
    "unmerge_adapter": "adapter_hub.lora",
    "load_base_model": "adapter_hub.models.loading",
    "load_tokenizer": "adapter_hub.models.loading",
}
_SUBMODULES = {"core", "lora", "models", "data", "training", "evaluation", "ops", "continual", "metrics", "stats",
               "bench"}

__all__ = sorted(_LAZY) + sorted(_SUBMODULES)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from adapter_hub import ops
    from adapter_hub.core.adapter import LoraAdapter
    from adapter_hub.core.config import LoraConfig
    from adapter_hub.lora import (
        attach,
        detach,
        disable_adapters,
        merge_adapter,
        route,
        set_active,
        unmerge_adapter,
    )
    from adapter_hub.models.loading import load_base_model, load_tokenizer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"adapter_hub.{name}")
    else:
        raise AttributeError(f"module 'adapter_hub' has no attribute {name!r}")
    globals()[name] = value
    return value
