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


class SlowDtypeWarning(UserWarning):
    """The base model's dtype will run far slower here than fp32 would (see `slow_dtype_reason`)."""


def cpu_bf16_native() -> bool | None:
    """Whether this CPU computes bf16 matmuls in hardware (AVX512-BF16 or AMX, the paths oneDNN takes);
    None where this torch cannot tell. Elsewhere a bf16 base model is emulated on the CPU."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is None for probe in probes):  # private helpers: a future torch may move them
        return None
    return any(probe() for probe in probes)


def slow_dtype_reason(dtype: torch.dtype, device: str | torch.device = "cpu") -> str | None:
    """Why a base model in `dtype` on `device` will be slow, or None. bf16 on a CPU without native bf16
    is emulated: on an AVX2-only AMD EPYC a SmolLM2 training step took 17x as long as in fp32 and a
    scored example 5.4x (benchmarks/RESULTS.md), where on a CPU with AMX bf16 is faster than fp32."""
    if dtype != torch.bfloat16 or torch.device(device).type != "cpu" or cpu_bf16_native() is not False:
        return None
    return ("dtype bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX): torch emulates it, and a training "
            "step runs an order of magnitude slower than in fp32; on this machine set dtype = \"fp32\" (or \"auto\"; "
            "`--dtype fp32` on the command line)")


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, d in DTYPES.items() if d == dtype)


def resolve_device(device: str) -> torch.device:
    """"auto" picks CUDA when present; a named CUDA device is refused where there is none."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UnavailableDeviceError(f"device {device!r} requested but CUDA is not available here")
    return torch.device(device)
