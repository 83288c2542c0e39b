"""What every adapter operation shares: compatibility checks, scaling folded into factors, results.

Every op works on *folded* factors (LoraAdapter.folded, core.factors.fold): for input i and module m,
B'_i = s_i·B_i (s = alpha/r or alpha/√r with rsLoRA, including per-module rank/alpha patterns), so
ΔW_i = B'_i·A_i with no scaling left to forget — the source of PEFT's double-scaling bug (#3111). Results are stored the same way
(alpha = r per module, scaling exactly 1) and record what made them in `provenance`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.core.config import LoraConfig
from adapter_hub.core.errors import IncompatibleAdaptersError
from adapter_hub.core.factors import ModuleFactors


def check_adapters(adapters: Sequence[LoraAdapter], *, allow_partial: bool = False) -> list[str]:
    """The modules to operate on (sorted), after checking base model, module sets and shapes."""
    if isinstance(adapters, LoraAdapter) or not isinstance(adapters, Sequence):
        raise TypeError("expected a list of LoraAdapter")
    if not adapters:
        raise ValueError("an operation needs at least one adapter; got an empty list")
    for a in adapters:
        if not isinstance(a, LoraAdapter):
            raise TypeError(f"expected LoraAdapter objects, got {type(a).__name__}")
    first = next((a for a in adapters if a.base_model and a.base_model.fingerprint), None)
    if first is not None:
        for a in adapters:
            if a.base_model and a.base_model.fingerprint:
                why = first.base_model.mismatch(a.base_model)
                if why:
                    raise IncompatibleAdaptersError(f"{first.label()} and {a.label()} were trained on different base "
                                                    f"models: {why}")
    union = sorted(set().union(*(a.modules for a in adapters)))
    if not allow_partial:
        problems = [f"{a.label()} lacks {len(set(union) - set(a.modules))} module(s), e.g. "
                    f"{sorted(set(union) - set(a.modules))[0]}" for a in adapters if set(a.modules) != set(union)]
        if problems:
            raise IncompatibleAdaptersError("the adapters target different modules: " + "; ".join(problems[:4]) +
                                            " (pass allow_partial=True / --allow-partial to treat missing modules as zero)")
    for m in union:
        shapes = {(a.label(), int(a.modules[m].A.shape[1]), int(a.modules[m].B.shape[0])) for a in adapters if m in a.modules}
        if len({(i, o) for _, i, o in shapes}) > 1:
            shown = ", ".join(f"{label}: {i}->{o}" for label, i, o in sorted(shapes))
            raise IncompatibleAdaptersError(f"module {m} has different shapes across the adapters ({shown})")
    if len({a.fan_in_fan_out for a in adapters}) > 1:
        raise IncompatibleAdaptersError("mixing Conv1D (fan_in_fan_out) and Linear adapters")
    return union


def check_weights(weights: Sequence[float] | None, n: int, default: float = 1.0) -> list[float]:
    if weights is None:
        return [default] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"{n} adapters but {len(weights)} weights")
    bad = [w for w in weights if not math.isfinite(w)]
    if bad:
        raise ValueError(f"weights must be finite numbers, got {bad}")
    return weights


def labels(adapters: Sequence[LoraAdapter]) -> list[str]:
    """Lineage inputs: each adapter's registry ref/digest; unsaved results pass their own inputs on."""
    out: list[str] = []
    for a in adapters:
        if a.ref or a.digest or not a.provenance.get("inputs"):
            out.append(a.label())
        else:
            out.extend(a.provenance["inputs"])
    return out


def provenance(op: str, adapters: Sequence[LoraAdapter], **params: Any) -> dict[str, Any]:
    """What made a result: op, inputs (refs) and parameters; earlier unsaved steps kept as a chain, and
    every op in it listed in chain_ops (from which the registry picks the lineage edge kind)."""
    chain = [a.provenance for a in adapters if not (a.ref or a.digest) and a.provenance.get("op")]
    ops = {op} | {step.get("op") for step in chain} | {op for step in chain for op in step.get("chain_ops", [])}
    out: dict[str, Any] = {"op": op, "inputs": labels(adapters), **{k: v for k, v in params.items() if v is not None}}
    if chain:
        out["chain"] = chain
        out["chain_ops"] = sorted(o for o in ops if o)
    return out


def record_errors(prov: dict[str, Any], errors: dict[str, float]) -> None:
    """Per-module relative Frobenius errors of a truncated result, and their maximum, into provenance."""
    prov["relative_error"] = {m: round(e, 8) for m, e in errors.items()}
    prov["max_relative_error"] = max(prov["relative_error"].values())


def from_factors(factors: dict[str, tuple[torch.Tensor, torch.Tensor]], like: LoraAdapter,
                 prov: dict[str, Any], dtype: torch.dtype | None = None) -> LoraAdapter:
    """A new adapter from folded factors {module: (A, B)}: alpha = r per module, so scaling is exactly 1."""
    dtype = dtype or next(iter(like.modules.values())).A.dtype
    modules = {m: ModuleFactors(A.to(dtype).contiguous(), B.to(dtype).contiguous()) for m, (A, B) in sorted(factors.items())}
    ranks = {m: f.rank for m, f in modules.items()}
    r = max(set(ranks.values()), key=list(ranks.values()).count)
    config = LoraConfig(r=r, alpha=float(r), target_modules=sorted(modules), dropout=0.0, use_rslora=False,
                        rank_pattern={m: k for m, k in ranks.items() if k != r},
                        alpha_pattern={m: float(k) for m, k in ranks.items() if k != r})
    return LoraAdapter(modules, config, like.base_model, like.fan_in_fan_out, prov)
