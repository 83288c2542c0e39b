"""Tiny random-init models for tests and quick experiments: built from a config, the same weights in
every process (and under every transformers version), with a byte-level tokenizer built in memory."""

from __future__ import annotations

import math
import zlib
from typing import Any

import torch
from torch import nn

TINY_SEED = 0  # fixed: the tiny models must be the same model in every process and every test

# Byte-level vocabulary: 256 byte tokens then the specials. Small enough that embeddings stay tiny.
_SPECIALS = ["<pad>", "<eos>", "<bos>"]
TINY_VOCAB = 256 + len(_SPECIALS)

# initializer_range=0.2 (not HF's 0.02): the head and embeddings stay frozen under LoRA, and with a
# final norm capping |h| ~ sqrt(hidden), a 0.02-scale head cannot move logits far from uniform (loss
# floors near 4.3 nats); at 0.2 a LoRA can drive the answer loss toward zero.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    # hidden 64 and 2 layers: ~0.2M parameters, ~15 ms per training step on one CPU core.
    "tiny-llama": dict(
        model_type="llama", vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        pad_token_id=256, eos_token_id=257, bos_token_id=258, initializer_range=0.2,
    ),
    "tiny-gpt2": dict(
        model_type="gpt2", vocab_size=TINY_VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=512,
        pad_token_id=256, eos_token_id=257, bos_token_id=258, initializer_range=0.2,
    ),
}


def tiny_config(name: str):
    from transformers import AutoConfig

    spec = dict(TINY_CONFIGS[name])
    return AutoConfig.for_model(spec.pop("model_type"), **spec)


def tiny_model(name: str) -> nn.Module:
    from transformers import AutoModelForCausalLM

    config = tiny_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = AutoModelForCausalLM.from_config(config)
    init_tiny_weights(model, config.initializer_range, getattr(config, "n_layer", None))
    model.config._name_or_path = name
    return model


def init_tiny_weights(model: nn.Module, std: float, gpt2_layers: int | None = None) -> None:
    """Our own deterministic init, each parameter from a generator seeded by its name: the tiny models
    are the same weights whatever transformers version builds them (its init order and RNG use
    change between releases, which changed the tiny models under the tests once). The rules are
    transformers' own for these architectures: matrices N(0, std), GPT-2's residual projections
    (c_proj) N(0, std/√(2·layers)), norm weights 1, biases 0."""
    with torch.no_grad():
        for pname, param in sorted(model.named_parameters()):
            if param.dim() < 2:
                param.fill_(0.0 if pname.endswith("bias") else 1.0)
                continue
            scale = std / math.sqrt(2 * gpt2_layers) if gpt2_layers and pname.endswith("c_proj.weight") else std
            generator = torch.Generator().manual_seed(TINY_SEED * 1_000_003 + zlib.crc32(pname.encode()))
            param.copy_(torch.randn(param.shape, generator=generator) * scale)


def byte_tokenizer():
    """A byte-level tokenizer (token id == byte value, then the specials) built in memory: no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: byte for byte, char in enumerate(_bytes_to_unicode())}
    vocab.update({special: 256 + i for i, special in enumerate(_SPECIALS)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-to-printable-char table (what the ByteLevel pre-tokenizer emits), indexed by byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = [], 0
    for byte in range(256):
        if byte in printable:
            table.append(chr(byte))
        else:
            table.append(chr(256 + extra))
            extra += 1
    return table
