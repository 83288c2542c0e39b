"""Running a causal LM in pieces: the decoder stack and the output head apart (training and scoring
need logits at a few positions only), and the KV cache under either of transformers' spellings."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(decoder, head) when logits are exactly head(hidden); (model, None) to use full logits.

    Training and scoring need logits at a few positions only (the answer tokens, the labels): running
    the head (vocab × hidden, a fifth of SmolLM2's FLOPs per token) only there is the main saving."""
    decoder = getattr(model, "base_model", model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if decoder is model or head is None or softcap:
        return model, None
    return decoder, head


def run_decoder(decoder: nn.Module, cache=None, **kwargs) -> tuple[Any, Any]:
    """The decoder's output and its KV cache, continuing from `cache` when given; transformers renamed
    the argument and the output field from past_key_values to cache, and this works with both."""
    if cache is not None:
        kwargs["cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"] = cache
    out = decoder(use_cache=True, **kwargs)
    new_cache = out.get("cache", None) if hasattr(out, "get") else None
    return out, (out.past_key_values if new_cache is None else new_cache)
