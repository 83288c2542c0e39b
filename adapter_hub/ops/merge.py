"""`merge`: one entry point for every method, in dense space (per module) or core space.

Dense (default for masked methods): each module's ΔW_i = s_i·B_i·A_i is formed for that module only,
merged element-wise, then factored back to the requested rank — peak memory is bounded by the largest
module, never the model. Exact SVD (torch.linalg.svd) for small modules; randomized
(torch.svd_lowrank) when the rank kept is small against the layer.

Core space (space="core", Panariello et al., NeurIPS 2025, https://arxiv.org/abs/2509.17786): the
stacked B's and A's give orthonormal reference bases U_B (out×R) and V_A (in×R); each input becomes
the R×R core M_i = U_Bᵀ·B'_i·A_i·V_A and ΔW_i = U_B·M_i·V_Aᵀ exactly. The element-wise method runs on the
small cores, and the result U_B·M·V_Aᵀ is already factored. Linear merges give identical results in
both spaces; TIES/DARE do not (their thresholds and masks see other coordinates): documented, not a bug.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.ops.align import (
    check_adapters,
    check_weights,
    from_factors,
    provenance,
    record_errors,
)
from adapter_hub.ops.methods import get_method
from adapter_hub.ops.svd import (
    COMPUTE,
    Spectrum,
    check_target,
    factored_svd,
    reduce_factors,
)

EXACT_SVD_MAX = 2048  # modules up to this size get a full, exact SVD when factored back


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (other C libraries). A merge allocates and frees a few MB of fp64
    temporaries per module between the long-lived results; glibc serves them from its heap (its mmap
    threshold rises after the first large free) and keeps the freed pages resident, so a 224-module
    merge grew ~11 MB per layer (benchmarks/RESULTS.md). Trimming every few modules gives them back."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


TRIM_EVERY = 8  # modules between trims: a trim walks the heap (~0.15 s each on the 7B shape), so not after each


def _release_freed_memory(device: torch.device) -> None:
    trim = _malloc_trim() if device.type == "cpu" else None
    if trim is not None:
        trim(0)


def merge(
    adapters: Sequence[LoraAdapter],
    method: str = "linear",
    weights: Sequence[float] | None = None,
    *,
    density: float | None = None,
    lam: float | None = None,
    divisor: str | None = None,
    elect: str | None = None,
    seed: int = 0,
    rank: int | None = None,
    energy: float | None = None,
    space: str = "dense",
    allow_partial: bool = False,
    options: Mapping[str, Any] | None = None,
) -> LoraAdapter:
    """Merge adapters with a named method (see ops.METHODS); optionally reduce to `rank` or `energy`.

    Each method takes only the parameters it declares (density, lam, divisor, elect, and by name in
    `options` the others, e.g. {"alpha": 1.2} for iso_c): giving another one is an error naming what
    it takes. Without rank/energy, factored methods are exact (rank
    Σ r_i), and masked methods keep rank Σ r_i (capped by the layer size).
    """
    spec = get_method(method)
    params = method_params(method, density=density, lam=lam, divisor=divisor, elect=elect, options=options)
    modules = check_adapters(adapters, allow_partial=allow_partial)
    weights = check_weights(weights, len(adapters))
    if space not in ("dense", "core"):
        raise ValueError(f"space must be 'dense' or 'core', got {space!r}")
    if rank is not None and energy is not None:
        raise ValueError("give rank= or energy=, not both")

    if rank is not None or energy is not None:
        check_target(rank, energy, None)
    device = _device(adapters)
    dtype = next(iter(adapters[0].modules.values())).A.dtype
    factors, errors = {}, {}
    for k, m in enumerate(modules):  # one module at a time: peak memory is one module's work, never the model's
        error = None
        if spec.kind == "factored":
            A, B = spec.fn(adapters, weights, [m], params)[m]
        elif space == "core":
            A, B = _core_merge(adapters, weights, m, spec, params, _generator(seed, m, device))
        else:  # the dense result is factored back to `rank` here: that truncation is an error to report
            (A, B), error = _dense_merge(adapters, weights, m, spec, params, _generator(seed, m, device), rank)
        if energy is not None or (rank is not None and error is None):
            reduced, second = reduce_factors([(m, A, B)], rank=None if energy is not None else rank, energy=energy,
                                             dtype=dtype)
            (A, B), e2 = reduced[m], second[m]
            error = e2 if error is None else (error**2 + e2**2 * (1 - error**2)) ** 0.5  # orthogonal truncations
        factors[m] = (A.to(dtype), B.to(dtype))  # stored precision at once: fp64 work never piles up
        del A, B
        if k % TRIM_EVERY == TRIM_EVERY - 1:
            _release_freed_memory(device)
        if error is not None:
            errors[m] = error
    prov = provenance("merge", adapters, method=method, weights=weights, seed=seed if spec.random else None,
                      space=space if spec.kind == "masked" else None, rank=rank, energy=energy, **params)
    if errors:
        record_errors(prov, errors)
    return from_factors(factors, adapters[0], prov, dtype)


def method_params(method: str, *, density: float | None = None, lam: float | None = None,
                  divisor: str | None = None, elect: str | None = None,
                  options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's full, checked parameter set from the options given (None = not given); an option
    the method does not take raises ValueError naming the method and what it takes."""
    given = {"density": density, "lambda": lam, "divisor": divisor, "elect": elect}
    named = {k: v for k, v in given.items() if v is not None}
    clash = sorted(set(named) & set(options or {}))
    if clash:
        raise ValueError(f"{', '.join(clash)} given twice (as an argument and in options)")
    return get_method(method).resolve({**named, **(options or {})})


def _generator(seed: int, module: str, device: torch.device) -> torch.Generator:
    # Per-module seed: the same merge gives the same masks whatever the module order or subset.
    return torch.Generator(device=device).manual_seed((int(seed) * 1_000_003 + zlib.crc32(module.encode())) % 2**63)


def _pairs(adapters, weights, module):
    return [(pair, w) for a, w in zip(adapters, weights) if (pair := a.folded(module)) is not None]


def dense_deltas(adapters: Sequence[LoraAdapter], module: str) -> tuple[torch.Tensor, list[int]]:
    """(n, out, in) stack of one module's ΔW_i (zeros for adapters lacking it), and their ranks."""
    shapes = [(int(a.modules[module].B.shape[0]), int(a.modules[module].A.shape[1])) for a in adapters if module in a.modules]
    out_f, in_f = shapes[0]
    stack, ranks = [], []
    for a in adapters:
        pair = a.folded(module)
        stack.append(pair[1] @ pair[0] if pair is not None else torch.zeros(out_f, in_f, device=_device(adapters)))
        ranks.append(0 if pair is None else pair[0].shape[0])
    return torch.stack(stack), ranks


def _device(adapters: Sequence[LoraAdapter]) -> torch.device:
    return next(iter(adapters[0].modules.values())).A.device


def _dense_merge(adapters, weights, module, spec, params, generator, rank):
    """Merge one module's dense ΔW's; factor back to `rank` (default Σ r_i). Returns ((A, B), rel. error)."""
    deltas, ranks = dense_deltas(adapters, module)  # (n, out, in)
    merged = spec.fn(deltas, torch.tensor(weights, device=deltas.device), params, generator)  # (out, in)
    del deltas
    if rank is not None and rank > min(merged.shape):
        raise ValueError(f"rank {rank} is more than the {min(merged.shape)} available in {module} (its layer size)")
    k = min(rank or sum(ranks), *merged.shape)
    A, B = _factor(merged, k)
    norm = float(merged.norm())
    error = 0.0 if norm == 0 else float((merged - (B @ A).to(merged.dtype)).norm()) / norm
    return (A, B), error


def _factor(delta: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with B·A the best (exact SVD) or near-best (randomized) rank-k approximation of delta."""
    if max(delta.shape) <= EXACT_SVD_MAX or 4 * k >= min(delta.shape):
        U, S, Vh = torch.linalg.svd(delta.to(COMPUTE), full_matrices=False)
    else:  # randomized: a few passes over the matrix instead of a full decomposition
        U, S, V = torch.svd_lowrank(delta.to(torch.float32), q=min(k + 16, min(delta.shape)), niter=4)
        Vh = V.T
    return Spectrum(U, S, Vh).truncate(k)


def core_bases(pairs) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal bases of the stacked B's column space and A's row space (the Core Space reference)."""
    A_s = torch.cat([A for (A, _), _ in pairs], 0).to(COMPUTE)  # (R, in)
    B_s = torch.cat([B for (_, B), _ in pairs], 1).to(COMPUTE)  # (out, R)
    eye = torch.eye(B_s.shape[1], dtype=COMPUTE, device=B_s.device)
    U_B = factored_svd(B_s, eye).U  # left singular vectors of B_s
    V_A = factored_svd(eye, A_s).Vh.T  # right singular vectors of A_s
    return U_B, V_A


def _core_merge(adapters, weights, module, spec, params, generator):
    pairs = _pairs(adapters, [1.0] * len(adapters), module)
    U_B, V_A = core_bases(pairs)
    cores = torch.stack([(U_B.T @ B.to(COMPUTE)) @ (A.to(COMPUTE) @ V_A) for (A, B), _ in pairs])  # (n, R, R)
    present = [w for a, w in zip(adapters, weights) if module in a.modules]
    merged = spec.fn(cores, torch.tensor(present, dtype=COMPUTE, device=cores.device), params, generator)  # (R, R)
    return V_A.T, U_B @ merged  # A: (R, in), B: (out, R)
