"""Where and in what precision a base model runs."""

from __future__ import annotations

import torch

from adapter_hub.core.errors import UnavailableDeviceError
from adapter_hub.models.names import DTYPE_SETTINGS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
assert set(DTYPES) == set(DTYPE_SETTINGS) - {"auto"}


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
        raise ValueError(f"dtype must be {', '.join(DTYPE_SETTINGS)}; got {setting!r}")
    return DTYPES[setting]


def cpu_bf16_native() -> bool | None:
    """Whether this CPU computes bf16 matmuls in hardware (AVX512-BF16 or AMX, the paths oneDNN takes);
    None where this torch cannot tell. Where it does not, load_base_model has a bf16 base multiply in
    fp32 (models.cpu_bf16): torch's emulated bf16 matmul is an order of magnitude slower."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is None for probe in probes):  # private helpers: a future torch may move them
        return None
    return any(probe() for probe in probes)


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, d in DTYPES.items() if d == dtype)


def resolve_device(device: str) -> torch.device:
    """"auto" picks CUDA when present; a named CUDA device is refused where there is none."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UnavailableDeviceError(f"device {device!r} requested but CUDA is not available here")
    return torch.device(device)
