"""LoRA layers on any transformers model: attach, activate, route per row, merge, detach.

A targeted `nn.Linear` (or GPT-2 `Conv1D`) is replaced in its parent by a `LoraLayer` that keeps the
original as `base_layer` and holds any number of named adapters (A: r×in, B: out×r, scaling s), so
ΔW = s·B·A. The model-level bookkeeping (configs, active set, merged set, base identity) lives in one
`LoraModelState` object on the model; the layers only hold tensors and the per-forward choice.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from adapter_hub.config import LoraConfig, lora_scaling
from adapter_hub.errors import IncompatibleAdaptersError, NonFiniteError, TargetModuleError
from adapter_hub.identity import BaseModelIdentity, base_parameters, compute_identity

if TYPE_CHECKING:
    from adapter_hub.adapter import LoraAdapter

STATE_ATTR = "_lora_state"


# --------------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------------


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's Conv1D (weight stored in×out). Detected by shape contract to avoid importing transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def is_wrappable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def _identity(t: torch.Tensor) -> tuple:
    """What must be equal for a cached copy of `t` to still be right."""
    return (t.data_ptr(), t.device, t.dtype, t._version, tuple(t.shape))


@dataclass
class _RoutePlan:
    """Stacked factors for one routed forward: slot k = adapter k, the last slot = no adapter (zeros)."""

    A_t: torch.Tensor  # (K+1, in, r_max): A_kᵀ zero-padded to the widest rank
    B_t: torch.Tensor  # (K+1, r_max, out): (s_k·B_k)ᵀ, scaling folded in
    index: torch.Tensor  # (N,) slot per batch row


class LoraLayer(nn.Module):
    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.fan_in_fan_out = is_conv1d(base_layer)
        weight = base_layer.weight
        if self.fan_in_fan_out:  # Conv1D stores (in, out)
            self.in_features, self.out_features = int(weight.shape[0]), int(weight.shape[1])
        else:
            self.in_features, self.out_features = int(weight.shape[1]), int(weight.shape[0])
        self.lora_A = nn.ParameterDict()  # name -> (r, in)
        self.lora_B = nn.ParameterDict()  # name -> (out, r)
        self.scaling: dict[str, float] = {}
        self.dropout: dict[str, float] = {}
        self.active: tuple[tuple[str, float], ...] = ()  # (name, weight) added in forward, merged excluded
        self._route: _RoutePlan | None = None
        # Stacked factors per routed adapter set, reused while no factor changes (see stacked()).
        self._stack_cache: dict[tuple[str, ...], tuple[tuple, torch.Tensor, torch.Tensor]] = {}

    def add(self, name: str, A: torch.Tensor, B: torch.Tensor, scaling: float, dropout: float) -> None:
        self.lora_A[name] = nn.Parameter(A)
        self.lora_B[name] = nn.Parameter(B)
        self.scaling[name] = float(scaling)
        self.dropout[name] = float(dropout)

    def remove(self, name: str) -> None:
        del self.lora_A[name], self.lora_B[name], self.scaling[name], self.dropout[name]
        self.active = tuple((n, w) for n, w in self.active if n != name)
        self._stack_cache.clear()

    def stacked(self, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_t, B_t) for routing over `names`, rebuilt only when a factor or scaling has changed.

        The key holds what really changes a factor: its storage (data_ptr), device and dtype — which
        `model.to(...)`/`.double()` replace behind the same Parameter object — and its in-place version
        counter (an optimizer step), so no one has to remember to clear the cache.
        """
        present = [n for n in names if n in self.lora_A]
        differentiable = torch.is_grad_enabled() and any(self.lora_A[n].requires_grad for n in present)
        signature = tuple((n, *_identity(self.lora_A[n]), *_identity(self.lora_B[n]), self.scaling[n]) for n in present)
        cached = self._stack_cache.get(names)
        if not differentiable and cached is not None and cached[0] == signature:
            return cached[1], cached[2]
        ref = self.lora_A[present[0]] if present else self.base_layer.weight
        dtype = ref.dtype if present else torch.float32
        r_max = max((self.lora_A[n].shape[0] for n in present), default=1)
        A_t = torch.zeros(len(names) + 1, self.in_features, r_max, dtype=dtype, device=ref.device)
        B_t = torch.zeros(len(names) + 1, r_max, self.out_features, dtype=dtype, device=ref.device)
        with torch.set_grad_enabled(differentiable):  # gradients flow into the stack only when training
            for k, n in enumerate(names):
                if n in self.lora_A:
                    r = self.lora_A[n].shape[0]
                    A_t[k, :, :r] = self.lora_A[n].T
                    B_t[k, :r, :] = (self.lora_B[n] * self.scaling[n]).T
        if differentiable:
            return A_t, B_t  # part of this step's graph: never reused
        self._stack_cache = {names: (signature, A_t, B_t)}  # keep one set: memory stays one adapter-stack
        return A_t, B_t

    def delta_weight(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """s·B·A in the base weight's own layout ((in, out) for Conv1D)."""
        delta = self.scaling[name] * (self.lora_B[name].to(dtype) @ self.lora_A[name].to(dtype))  # (out, in)
        return delta.T if self.fan_in_fan_out else delta

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self._route is not None:
            return self._routed(x, result)
        for name, weight in self.active:
            A, B = self.lora_A[name], self.lora_B[name]
            h = x.to(A.dtype)
            p = self.dropout[name]
            if p > 0.0 and self.training:
                h = F.dropout(h, p=p, training=True)
            lora_out = F.linear(F.linear(h, A), B)  # (..., r) -> (..., out)
            result = result + (lora_out * (self.scaling[name] * weight)).to(result.dtype)
        return result

    def _routed(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        plan = self._route
        assert plan is not None
        n = x.shape[0]
        if plan.index.shape[0] != n:
            raise ValueError(f"routing was set for {plan.index.shape[0]} rows but the batch has {n}")
        h = x.to(plan.A_t.dtype).reshape(n, -1, self.in_features)  # (N, T, in)
        h = torch.bmm(h, plan.A_t[plan.index])  # (N, T, r): each row through its own A
        B_rows = plan.B_t[plan.index]  # (N, r, out)
        flat = result.reshape(n, -1, self.out_features)  # (N, T, out)
        in_place = flat.dtype == h.dtype == B_rows.dtype and not torch.is_autocast_enabled(x.device.type)
        if not torch.is_grad_enabled() and in_place:
            flat.baddbmm_(h, B_rows)  # inference: add into the base output, no extra activation pass
            return result
        return torch.baddbmm(flat.to(h.dtype), h, B_rows).reshape(result.shape).to(result.dtype)


# --------------------------------------------------------------------------------------------------
# Model-level state
# --------------------------------------------------------------------------------------------------


@dataclass
class LoraModelState:
    configs: dict[str, LoraConfig] = field(default_factory=dict)
    identity: BaseModelIdentity | None = None  # computed once, before any merge can change weights
    active: list[tuple[str, float]] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    # Exact copies of the base weights a merge into a sub-fp32 (bf16/fp16) base changed, per adapter:
    # unmerging the most recent merge restores them bit for bit (subtracting would leave rounding).
    merge_backups: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    provenance: dict[str, dict] = field(default_factory=dict)  # per adapter: where it came from


def model_state(model: nn.Module) -> LoraModelState:
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        state = LoraModelState()
        object.__setattr__(model, STATE_ATTR, state)
    return state


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLayer]]:
    """(module name as in the bare model, layer) for every wrapped layer."""
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


def list_adapters(model: nn.Module) -> list[str]:
    state = getattr(model, STATE_ATTR, None)
    return list(state.configs) if state else []


def base_identity(model: nn.Module) -> BaseModelIdentity:
    state = model_state(model)
    if state.identity is None:
        if state.merged:
            raise RuntimeError("cannot fingerprint a model with merged adapters; unmerge first")
        state.identity = compute_identity(model)
    return state.identity


# --------------------------------------------------------------------------------------------------
# Choosing target modules
# --------------------------------------------------------------------------------------------------


def _output_head_names(model: nn.Module) -> set[str]:
    names = {"lm_head"}
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is not None:
        for name, module in model.named_modules():
            if module is head or (isinstance(module, LoraLayer) and module.base_layer is head):
                names.add(name)
    return names


def resolve_targets(model: nn.Module, target_modules: str | Sequence[str]) -> list[str]:
    """Module names selected by "all-linear", a regex (full match), or a list of names/suffixes."""
    modules = dict(model.named_modules())
    candidates = {
        name: (mod.base_layer if isinstance(mod, LoraLayer) else mod)
        for name, mod in modules.items()
        if not name.endswith(".base_layer") and (isinstance(mod, LoraLayer) or is_wrappable(mod))
    }
    if target_modules == "all-linear":
        heads = _output_head_names(model)
        chosen = [n for n in candidates if n not in heads and n.rsplit(".", 1)[-1] not in heads]
        if not chosen:
            raise TargetModuleError("target_modules='all-linear' found no linear layer besides the output head")
        return chosen
    if isinstance(target_modules, str):
        pattern = re.compile(target_modules)
        matched = [n for n in modules if n and pattern.fullmatch(n) and not n.endswith(".base_layer")]
        if not matched:
            raise TargetModuleError(f"target_modules regex {target_modules!r} matched no module of the model")
        _check_wrappable(matched, modules)
        return matched
    chosen: list[str] = []
    for target in target_modules:
        hits = [n for n in modules if (n == target or n.endswith("." + target)) and not n.endswith(".base_layer")]
        if not hits:
            raise TargetModuleError(
                f"target module {target!r} not found in the model "
                f"(linear layers look like {sorted(candidates)[:3]}...)"
            )
        _check_wrappable(hits, modules)
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _check_wrappable(names: Sequence[str], modules: dict[str, nn.Module]) -> None:
    for name in names:
        mod = modules[name]
        if not (isinstance(mod, LoraLayer) or is_wrappable(mod)):
            raise TargetModuleError(
                f"module {name!r} is a {type(mod).__name__}; LoRA wraps only nn.Linear and GPT-2 Conv1D"
            )


# --------------------------------------------------------------------------------------------------
# Attach / detach
# --------------------------------------------------------------------------------------------------


def _check_name(model: nn.Module, name: str) -> None:
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"adapter name must be a non-empty string without '.', got {name!r}")
    if hasattr(nn.ParameterDict(), name):  # the name becomes an attribute of the layers' ParameterDicts
        raise ValueError(f"adapter name {name!r} is reserved (it clashes with a torch.nn.Module attribute); "
                         f"pick another name")
    if name in list_adapters(model):
        raise ValueError(f"an adapter named {name!r} is already attached; detach it or pick another name")


def _wrap(model: nn.Module, module_name: str) -> LoraLayer:
    module = model.get_submodule(module_name)
    if isinstance(module, LoraLayer):
        return module
    parent_name, _, child = module_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    layer = LoraLayer(module)
    setattr(parent, child, layer)
    return layer


def _unwrap(model: nn.Module, module_name: str, layer: LoraLayer) -> None:
    parent_name, _, child = module_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, layer.base_layer)


def _init_factors(r: int, fan_in: int, fan_out: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    # PEFT's default: A as nn.Linear's own init (Kaiming-uniform, a=√5), B zero, so ΔW = 0 at start.
    A = torch.empty(r, fan_in)
    nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)
    return A, torch.zeros(fan_out, r)


def attach(
    model: nn.Module,
    adapter: LoraConfig | "LoraAdapter",
    name: str = "default",
    *,
    activate: Literal["only", "add", "none"] = "only",
    trainable: bool = True,
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Attach a new adapter (from a LoraConfig) or a saved one (a LoraAdapter) under `name`.

    Everything is checked before the model is touched: the name, the target modules, and for a
    LoraAdapter the base-model identity and every factor's shape. Base parameters are frozen.
    activate: "only" makes this the single active adapter, "add" stacks it on those already active.
    """
    from adapter_hub.adapter import LoraAdapter

    _check_name(model, name)
    modules = dict(model.named_modules())
    if isinstance(adapter, LoraConfig):
        config = adapter
        targets = resolve_targets(model, config.target_modules)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        factors = {}
        for target in targets:
            mod = modules[target]
            base = mod.base_layer if isinstance(mod, LoraLayer) else mod
            fan_in, fan_out = (base.weight.shape[0], base.weight.shape[1]) if is_conv1d(base) else (base.weight.shape[1], base.weight.shape[0])
            factors[target] = _init_factors(config.rank_for(target), int(fan_in), int(fan_out), generator)
        provenance: dict = {}
    elif isinstance(adapter, LoraAdapter):
        config = adapter.config
        check_compatible(model, adapter)
        factors = {m: (f.A.detach().clone(), f.B.detach().clone()) for m, f in adapter.modules.items()}
        provenance = dict(adapter.provenance)
    else:
        raise TypeError(f"attach() takes a LoraConfig or a LoraAdapter, got {type(adapter).__name__}")

    state = model_state(model)
    base_identity(model)  # fingerprint the untouched base before the first wrap
    for _, param in base_parameters(model):  # the base is frozen; other adapters keep their flags
        param.requires_grad_(False)
    for target, (A, B) in factors.items():
        layer = _wrap(model, target)
        device = layer.base_layer.weight.device
        layer.add(name, A.to(device=device, dtype=dtype), B.to(device=device, dtype=dtype),
                  config.scaling_for(target), config.dropout)
        layer.lora_A[name].requires_grad_(trainable)
        layer.lora_B[name].requires_grad_(trainable)
    state.configs[name] = config
    state.provenance[name] = provenance
    if activate == "only":
        set_active(model, [name])
    elif activate == "add":
        set_active(model, [n for n, _ in state.active] + [name], [w for _, w in state.active] + [1.0])
    return model


def check_compatible(model: nn.Module, adapter: "LoraAdapter") -> None:
    """Raise IncompatibleAdaptersError unless `adapter` fits `model` (identity, modules, shapes)."""
    if adapter.base_model is not None and adapter.base_model.fingerprint:
        why = adapter.base_model.mismatch(base_identity(model))
        if why:
            raise IncompatibleAdaptersError(f"adapter was trained on another base model: {why}")
    modules = dict(model.named_modules())
    problems = []
    for target, f in adapter.modules.items():
        mod = modules.get(target)
        if mod is None or not (isinstance(mod, LoraLayer) or is_wrappable(mod)):
            found = "missing" if mod is None else type(mod).__name__
            problems.append(f"{target}: not a linear layer of this model ({found})")
            continue
        base = mod.base_layer if isinstance(mod, LoraLayer) else mod
        w = base.weight.shape
        fan_in, fan_out = (w[0], w[1]) if is_conv1d(base) else (w[1], w[0])
        if f.A.shape[1] != fan_in or f.B.shape[0] != fan_out:
            problems.append(
                f"{target}: adapter maps {f.A.shape[1]}->{f.B.shape[0]} but the layer maps {fan_in}->{fan_out}"
            )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise IncompatibleAdaptersError(f"adapter does not fit this model: {shown}")


def detach(model: nn.Module, name: str | None = None) -> nn.Module:
    """Remove one adapter (or all, name=None), unmerging first; layers left empty are unwrapped."""
    state = model_state(model)
    names = list(state.configs) if name is None else [name]
    for n in names:
        if n not in state.configs:
            raise KeyError(f"no adapter named {n!r} is attached (attached: {list(state.configs)})")
    for n in names:
        if n in state.merged:
            unmerge_adapter(model, n)
    for module_name, layer in list(lora_layers(model)):
        for n in names:
            if n in layer.lora_A:
                layer.remove(n)
        if not layer.lora_A:
            _unwrap(model, module_name, layer)
    for n in names:
        del state.configs[n]
        state.provenance.pop(n, None)
    state.active = [(n, w) for n, w in state.active if n not in names]
    if not state.configs:
        model.__dict__.pop(STATE_ATTR, None)  # nothing attached: the model is exactly the original again
    return model


# --------------------------------------------------------------------------------------------------
# Which adapters act
# --------------------------------------------------------------------------------------------------


def set_active(model: nn.Module, names: str | Sequence[str], weights: Sequence[float] | None = None) -> None:
    """Make exactly these adapters active, each output scaled by its weight (default 1)."""
    state = model_state(model)
    names = [names] if isinstance(names, str) else list(names)
    weights = [1.0] * len(names) if weights is None else [float(w) for w in weights]
    if len(weights) != len(names):
        raise ValueError(f"{len(names)} adapters but {len(weights)} weights")
    unknown = [n for n in names if n not in state.configs]
    if unknown:
        raise KeyError(f"unknown adapter(s) {unknown}; attached: {list(state.configs)}")
    bad = [w for w in weights if not math.isfinite(w)]
    if bad:
        raise ValueError(f"adapter weights must be finite, got {bad}")
    state.active = list(zip(names, weights))
    _push_active(model)


def disable_adapters(model: nn.Module) -> None:
    """No adapter acts (merged ones stay merged: unmerge to remove them from the weights)."""
    set_active(model, [])


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    state = model_state(model)
    saved = list(state.active)
    disable_adapters(model)
    try:
        yield
    finally:
        state.active = saved
        _push_active(model)


def set_trainable(model: nn.Module, names: Sequence[str]) -> None:
    """Only these adapters' factors receive gradients."""
    for _, layer in lora_layers(model):
        for n in layer.lora_A:
            flag = n in names
            layer.lora_A[n].requires_grad_(flag)
            layer.lora_B[n].requires_grad_(flag)


def _push_active(model: nn.Module) -> None:
    state = model_state(model)
    live = tuple((n, w) for n, w in state.active if n not in state.merged)
    for _, layer in lora_layers(model):
        layer.active = tuple((n, w) for n, w in live if n in layer.lora_A)


@contextlib.contextmanager
def route(model: nn.Module, rows: Sequence[str | None]) -> Iterator[None]:
    """Within this block, row i of every batch uses adapter rows[i] alone (None: the bare base model).

    One forward serves many adapters: per layer, the factors are stacked once per block and each
    row's pair is gathered, so the LoRA path is two batched matmuls whatever the mix of adapters.
    """
    state = model_state(model)
    if state.merged:
        raise RuntimeError(f"cannot route while adapters are merged into the weights: {state.merged}")
    names = sorted({r for r in rows if r is not None})
    unknown = [n for n in names if n not in state.configs]
    if unknown:
        raise KeyError(f"unknown adapter(s) {unknown} in routing; attached: {list(state.configs)}")
    slot = {n: i for i, n in enumerate(names)}
    layers = [layer for _, layer in lora_layers(model)]
    if model.training and any(layer.dropout.get(n, 0.0) > 0 for layer in layers for n in names):
        raise RuntimeError("routing applies no dropout; call model.eval() or use adapters without dropout")
    index_cpu = torch.tensor([slot[r] if r is not None else len(names) for r in rows], dtype=torch.long)
    index_on: dict[torch.device, torch.Tensor] = {}  # one copy per device, not one per layer
    try:
        for layer in layers:
            A_t, B_t = layer.stacked(tuple(names))
            if A_t.device not in index_on:
                index_on[A_t.device] = index_cpu.to(A_t.device)
            layer._route = _RoutePlan(A_t, B_t, index_on[A_t.device])
        yield
    finally:
        for layer in layers:
            layer._route = None


# --------------------------------------------------------------------------------------------------
# Merge into the base weights and back out
# --------------------------------------------------------------------------------------------------


def merge_adapter(model: nn.Module, name: str, weight: float = 1.0) -> None:
    """Add weight·s·B·A into every base weight the adapter touches; refuse if any result is non-finite.

    All layers are checked before any weight changes, so a refused merge leaves the model as it was.
    ΔW is computed in fp32 (or wider) and rounded once into the base's dtype. On a bf16/fp16 base the
    touched weights are also copied first (memory: one copy of them, in their dtype), so that
    unmerging it — as the most recent merge — restores them bit for bit; unmerging an earlier merge
    out of order subtracts instead, which leaves that dtype's rounding (~1e-3 relative for bf16).
    """
    state = model_state(model)
    if name not in state.configs:
        raise KeyError(f"no adapter named {name!r} is attached")
    if name in state.merged:
        raise RuntimeError(f"adapter {name!r} is already merged")
    layers = [(m, layer) for m, layer in lora_layers(model) if name in layer.lora_A]
    with torch.no_grad():
        for module_name, layer in layers:
            if not torch.isfinite(_shifted_weight(layer, name, weight)).all():
                raise NonFiniteError(f"merging {name!r} would put NaN/inf into {module_name}; nothing was changed")
        if layers and layers[0][1].base_layer.weight.dtype.itemsize < 4:
            state.merge_backups[name] = [layer.base_layer.weight.detach().clone() for _, layer in layers]
        for _, layer in layers:
            w = layer.base_layer.weight
            w.copy_(_shifted_weight(layer, name, weight).to(w.dtype))
    state.merged.append(name)
    state.provenance.setdefault(name, {})["merged_weight"] = weight
    _push_active(model)


def unmerge_adapter(model: nn.Module, name: str) -> None:
    """Remove a merged adapter's ΔW (with the weight it was merged with) from the base weights.

    fp32 bases: subtraction, exact up to fp32 rounding. bf16/fp16 bases: the most recent merge is undone
    from its exact copy (bit-identical); an earlier one by subtraction (see merge_adapter)."""
    state = model_state(model)
    if name not in state.merged:
        raise RuntimeError(f"adapter {name!r} is not merged")
    weight = state.provenance.get(name, {}).pop("merged_weight", 1.0)
    backup = state.merge_backups.pop(name, None)
    layers = [layer for _, layer in lora_layers(model) if name in layer.lora_A]
    with torch.no_grad():
        if backup is not None and state.merged[-1] == name:
            for layer, original in zip(layers, backup):
                layer.base_layer.weight.copy_(original)
        else:
            for layer in layers:
                w = layer.base_layer.weight
                w.copy_(_shifted_weight(layer, name, -weight).to(w.dtype))
    state.merged.remove(name)
    _push_active(model)


def _shifted_weight(layer: LoraLayer, name: str, weight: float) -> torch.Tensor:
    """W + weight·ΔW, computed in fp32 or wider (bf16 weights are merged without bf16 rounding of ΔW)."""
    w = layer.base_layer.weight
    acc = torch.promote_types(w.dtype, torch.float32)
    return w.to(acc) + weight * layer.delta_weight(name, acc)


def lora_parameters(model: nn.Module, names: Sequence[str] | None = None) -> list[nn.Parameter]:
    """The A and B parameters of the given adapters (all when None), in a stable order."""
    params = []
    for _, layer in lora_layers(model):
        for n in layer.lora_A:
            if names is None or n in names:
                params += [layer.lora_A[n], layer.lora_B[n]]
    return params


__all__ = [
    "LoraLayer", "attach", "detach", "set_active", "disable_adapters", "adapters_disabled", "set_trainable",
    "route", "merge_adapter", "unmerge_adapter", "lora_layers", "list_adapters", "lora_parameters",
    "check_compatible", "resolve_targets", "base_identity", "lora_scaling",
]
