"""LoraAdapter: per-module LoRA factors + config + base-model identity, in PEFT's file format.

On disk an adapter is exactly a PEFT LoRA folder: `adapter_config.json` and
`adapter_model.safetensors` with keys `base_model.model.<module>.lora_{A,B}.weight`. Our extra
identity (base-model fingerprint) and provenance (what operation made it) travel in the safetensors
header metadata, which PEFT ignores, so the folder stays loadable by PEFT, vLLM and friends.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from adapter_hub.core.config import LoraConfig
from adapter_hub.core.errors import (
    AdapterFormatError,
    AdapterNotAttachedError,
    NonFiniteError,
)
from adapter_hub.core.factors import ModuleFactors, delta_weight, fold, tensor_bytes
from adapter_hub.core.identity import BaseModelIdentity
from registry.adapter_format import (  # the PEFT format, torch-free
    CONFIG_FILE,
    KEY_PREFIX,
    META_IDENTITY,
    META_PROVENANCE,
    PICKLE_FILE,
    WEIGHTS_FILE,
    check_pair_shapes,
    inspect_folder,
    pair_lora_keys,
    rank_for,
)

# The LoRA engine (adapter_hub.lora) keeps its bookkeeping for a model in this attribute: an object
# whose `extract(model, name)` returns the attached adapter `name` as a LoraAdapter. Reading it
# through this name keeps the file format free of the engine: the engine builds on core, never the
# other way round.
ATTACHED = "_lora_state"


@dataclass
class LoraAdapter:
    """A LoRA adapter detached from any model: ΔW_m = config.scaling_for(m) · B_m · A_m for each module m."""

    modules: dict[str, ModuleFactors]
    config: LoraConfig
    base_model: BaseModelIdentity | None = None
    fan_in_fan_out: bool = False  # layers are GPT-2 Conv1D (weight in×out); factors are stored as usual
    provenance: dict[str, Any] = field(default_factory=dict)  # the operation that made it (ops, training)
    ref: str | None = None  # set by the registry when loaded from it ("agnews:3")
    digest: str | None = None  # set by the registry: content digest of the stored version

    def __post_init__(self) -> None:
        if not self.modules:
            raise AdapterFormatError("an adapter needs at least one module")
        for name, f in self.modules.items():
            check_pair_shapes(name, tuple(f.A.shape), tuple(f.B.shape))
            if f.rank != self.config.rank_for(name):
                raise AdapterFormatError(
                    f"{name}: factors have rank {f.rank} but the config says {self.config.rank_for(name)}"
                )

    # ---- views -----------------------------------------------------------------------------------

    def scaling(self, module: str) -> float:
        return self.config.scaling_for(module)

    def delta_weight(self, module: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """ΔW of one module, (out, in), in `dtype`."""
        f = self.modules[module]
        return delta_weight(f.A, f.B, self.scaling(module), dtype)

    def folded(self, module: str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(A, s·B) of one module in `dtype`, or None when the adapter lacks it (a partial merge)."""
        f = self.modules.get(module)
        return None if f is None else fold(f.A, f.B, self.scaling(module), dtype)

    @property
    def ranks(self) -> dict[str, int]:
        return {m: f.rank for m, f in self.modules.items()}

    def num_parameters(self) -> int:
        return sum(f.A.numel() + f.B.numel() for f in self.modules.values())

    def weights_digest(self) -> str:
        """sha256 of what the adapter computes — module names, factors (dtype and bytes), scaling —
        and nothing else: two adapters with the same weights and different provenance (a registry
        digest covers the files, metadata included) share it."""
        h = hashlib.sha256()
        for m in sorted(self.modules):
            f = self.modules[m]
            h.update(f"{m}\0{self.scaling(m)!r}\0{f.A.dtype}\0{tuple(f.A.shape)}\0{tuple(f.B.shape)}\0".encode())
            h.update(tensor_bytes(f.A))
            h.update(tensor_bytes(f.B))
        return h.hexdigest()

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "LoraAdapter":
        moved = {m: ModuleFactors(f.A.to(device=device, dtype=dtype), f.B.to(device=device, dtype=dtype))
                 for m, f in self.modules.items()}
        return LoraAdapter(moved, self.config, self.base_model, self.fan_in_fan_out, dict(self.provenance),
                           self.ref, self.digest)

    def label(self) -> str:
        """How ops name this adapter in lineage: its registry ref, else its digest, else 'unsaved'."""
        return self.ref or self.digest or "unsaved"

    def __repr__(self) -> str:
        ranks = sorted(set(self.ranks.values()))
        base = self.base_model.name if self.base_model else None
        return (f"LoraAdapter({len(self.modules)} modules, rank {ranks if len(ranks) > 1 else ranks[0]}, "
                f"alpha {self.config.alpha}, base {base!r}{', ref ' + self.ref if self.ref else ''})")

    # ---- from a live model -----------------------------------------------------------------------

    @classmethod
    def from_model(cls, model: nn.Module, name: str = "default") -> "LoraAdapter":
        """Copy adapter `name`'s factors out of a model it is attached to (adapter_hub.lora.attach)."""
        attached = getattr(model, ATTACHED, None)
        if attached is None:
            raise AdapterNotAttachedError(f"no adapter named {name!r} is attached (the model has no adapters)")
        return attached.extract(model, name)

    # ---- files -----------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write a PEFT LoRA folder: adapter_config.json + adapter_model.safetensors."""
        for name, f in self.modules.items():
            _check_finite(name, f.A, f.B)
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name in sorted(self.modules):
            f = self.modules[name]
            tensors[f"{KEY_PREFIX}{name}.lora_A.weight"] = f.A.detach().contiguous().cpu()
            tensors[f"{KEY_PREFIX}{name}.lora_B.weight"] = f.B.detach().contiguous().cpu()
        metadata = {"format": "pt"}
        if self.base_model is not None:
            metadata[META_IDENTITY] = json.dumps(self.base_model.to_dict())
        if self.provenance:
            metadata[META_PROVENANCE] = json.dumps(self.provenance, default=str)
        _atomic_write(out / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata=metadata))
        config_text = json.dumps(self.peft_config_dict(), indent=2, sort_keys=True) + "\n"
        _atomic_write(out / CONFIG_FILE, lambda p: p.write_text(config_text))
        return out

    def peft_config_dict(self) -> dict[str, Any]:
        c = self.config
        modules = sorted(self.modules)
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": c.r,
            "lora_alpha": c.alpha,
            "lora_dropout": c.dropout,
            "use_rslora": c.use_rslora,
            "target_modules": modules,
            "rank_pattern": dict(c.rank_pattern),
            "alpha_pattern": dict(c.alpha_pattern),
            "fan_in_fan_out": self.fan_in_fan_out,
            "base_model_name_or_path": self.base_model.name if self.base_model else None,
            "bias": "none",
            "init_lora_weights": True,
            "inference_mode": True,
            "modules_to_save": None,
            "use_dora": False,
        }

    @classmethod
    def load(cls, directory: str | os.PathLike, *, allow_bin: bool = False) -> "LoraAdapter":
        """Read a PEFT LoRA folder (ours or PEFT's). Every problem raises AdapterFormatError naming it.

        A pickle `adapter_model.bin` is refused unless allow_bin=True, and then it is read with
        torch.load(weights_only=True), which cannot execute code.
        """
        folder = Path(directory)
        info = inspect_folder(folder, allow_bin=allow_bin)  # config, header, names, shapes, ranks, NaN/inf
        raw = info.config
        if info.files:
            tensors, metadata = _read_safetensors(folder / WEIGHTS_FILE)
        else:  # an allowed pickle .bin: validated here, tensor by tensor
            tensors, metadata = _read_bin(folder / PICKLE_FILE), {}
        modules = _factors_from_state_dict(tensors, folder)
        if not info.files:  # inspect_folder checked ranks and NaN/inf in a safetensors header; a .bin only here
            for name, f in modules.items():
                _check_finite(name, f.A, f.B, where=str(folder))
                if f.rank != rank_for(raw, name):
                    raise AdapterFormatError(f"{folder / CONFIG_FILE}: {name} has rank {f.rank} in the weights but "
                                             f"{rank_for(raw, name)} in the config")
        config = _config_from_peft(raw, modules)
        identity = None
        if META_IDENTITY in metadata:
            try:
                identity = BaseModelIdentity.from_dict(json.loads(metadata[META_IDENTITY]))
            except (ValueError, KeyError, TypeError) as exc:
                raise AdapterFormatError(f"{folder / WEIGHTS_FILE}: malformed base-model identity: {exc}")
        provenance = json.loads(metadata[META_PROVENANCE]) if META_PROVENANCE in metadata else {}
        return cls(modules, config, identity, bool(raw.get("fan_in_fan_out", False)), provenance)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _check_finite(name: str, A: torch.Tensor, B: torch.Tensor, where: str = "") -> None:
    for which, t in (("lora_A", A), ("lora_B", B)):
        if not torch.isfinite(t).all():
            raise NonFiniteError(f"{where + ': ' if where else ''}{name}.{which} contains NaN or inf")


def config_for_modules(template: LoraConfig, modules: dict[str, ModuleFactors]) -> LoraConfig:
    """A config whose r/alpha (and patterns where ranks differ) describe exactly these modules."""
    ranks = {m: f.rank for m, f in modules.items()}
    alphas = {m: template.alpha_for(m) for m in modules}
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    return LoraConfig(
        r=r, alpha=alpha, target_modules=sorted(modules), dropout=template.dropout, use_rslora=template.use_rslora,
        rank_pattern={m: k for m, k in sorted(ranks.items()) if k != r},
        alpha_pattern={m: a for m, a in sorted(alphas.items()) if a != alpha},
    )


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterFormatError(f"{path}: unreadable or truncated safetensors file ({exc})")


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)  # never full unpickling
    except Exception as exc:  # torch raises many types for bad pickles
        raise AdapterFormatError(f"{path}: not a plain tensor state dict ({exc})")
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise AdapterFormatError(f"{path}: expected a dict of tensors")
    return tensors


def _factors_from_state_dict(tensors: dict[str, torch.Tensor], folder: Path) -> dict[str, ModuleFactors]:
    pairs = pair_lora_keys({key: tuple(t.shape) for key, t in tensors.items()}, str(folder))
    return {module: ModuleFactors(tensors[a], tensors[b]) for module, (a, b) in pairs.items()}


def _config_from_peft(raw: dict[str, Any], modules: dict[str, ModuleFactors]) -> LoraConfig:
    patterns = {
        "rank_pattern": {k: int(v) for k, v in (raw.get("rank_pattern") or {}).items()},
        "alpha_pattern": {k: float(v) for k, v in (raw.get("alpha_pattern") or {}).items()},
    }
    template = LoraConfig(r=int(raw["r"]), alpha=float(raw.get("lora_alpha") or 8),
                          dropout=float(raw.get("lora_dropout") or 0.0),
                          use_rslora=bool(raw.get("use_rslora", False)), **patterns)
    return config_for_modules(template, modules)
