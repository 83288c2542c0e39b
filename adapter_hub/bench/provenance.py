"""Which code and which machine produced a result: stored with every cell, so a run resumed over
several sessions (and machines) shows which code made which cells, and which cells' seconds compare."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import adapter_hub
from adapter_hub.models.devices import cpu_bf16_native


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """adapter-hub's version, with the git commit (and "-dirty") when it runs from a checkout. Stored
    with every cell: a run resumed over several sessions shows which code produced which cells."""
    here = Path(adapter_hub.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return adapter_hub.__version__
    return f"{adapter_hub.__version__}+g{commit}{'-dirty' if dirty else ''}"


CPUINFO = Path("/proc/cpuinfo")


def _first_processor(path: Path | None) -> dict[str, str]:
    """The first processor's `key: value` lines of a /proc/cpuinfo-style file (None: this machine's;
    {} when unreadable)."""
    fields: dict[str, str] = {}
    try:
        with open(path or CPUINFO) as fh:
            for line in fh:
                if not line.strip():
                    if fields:
                        break  # one processor is enough: the others repeat it
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name(path: Path | None = None) -> str:
    """The CPU's model name (Linux /proc/cpuinfo; platform's answer elsewhere)."""
    return _first_processor(path).get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_id(path: Path | None = None) -> str | None:
    """e.g. "family 25 model 1 stepping 1, cache 512 KB" (None where /proc/cpuinfo does not say).
    Cloud hosts mask the model name ("AMD EPYC" for several generations), and the same cell's seconds,
    and even its bits (kernels pick their blocking per CPU), can differ from one such host to the next."""
    fields = _first_processor(path)
    if "cpu family" not in fields or "model" not in fields:
        return None
    text = f"family {fields['cpu family']} model {fields['model']}"
    if "stepping" in fields:
        text += f" stepping {fields['stepping']}"
    if "cache size" in fields:
        text += f", cache {fields['cache size']}"
    return text


def machine(device: str | torch.device) -> dict[str, Any]:
    """Where a cell computed, for reading its seconds: the same cell took up to 2x as long from one
    session's CPU to the next. "bf16" says how a bf16 base multiplies on this CPU: "native" (AMX /
    AVX512-BF16) or "fp32 matmuls" (models.cpu_bf16, where the CPU has neither)."""
    where: dict[str, Any] = {"device": str(device)}
    if torch.device(device).type == "cuda":
        where["gpu"] = torch.cuda.get_device_name(torch.device(device))
        return where
    native = cpu_bf16_native()
    where |= {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "bf16": "unknown" if native is None else "native" if native else "fp32 matmuls"}
    identified = cpu_id()
    return where if identified is None else where | {"cpu_id": identified}
