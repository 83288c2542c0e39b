"""The vocabulary every other package shares, and nothing that runs a model: what a LoRA adapter is
(its config and scaling, its per-module factors, its PEFT files), which base model it belongs to,
the error hierarchy, the checks and progress display that configs and long jobs use, and the key
that says when a cached copy of a tensor is stale (cache_keys).

Import from the modules (`adapter_hub.core.config`, `.adapter`, ...); the names users need are also
on `adapter_hub` itself. This package imports nothing above it: `adapter_hub.lora` builds on it.
"""
