"""Rank reduction by the factored SVD: the exact truncated SVD of Σ w_i·s_i·B_i·A_i from the factors alone.

rank(Σ B'_i A_i) ≤ R = Σ r_i, so with B_s = [B'_1 … B'_n] (out×R) and A_s = [A_1; …; A_n] (R×in):
QR both (B_s = Q_B R_B, A_sᵀ = Q_A R_A), SVD the R×R core R_B R_Aᵀ = U S Vᵀ, and ΔW = (Q_B U) S (Q_A V)ᵀ.
Truncating S gives the optimal rank-k approximation (Eckart–Young) in O((out+in)·R²) time and memory
instead of a dense out×in SVD, O(out·in·min(out, in)). Computed in float64 whatever the storage dtype.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from adapter_hub.core.adapter import LoraAdapter
from adapter_hub.ops.align import from_factors, provenance, record_errors

COMPUTE = torch.float64  # the core is tiny; fp64 costs nothing and keeps tails exact (bf16 SVD is unsupported)


@dataclass
class Spectrum:
    """ΔW = U·diag(S)·Vh for one module, from its factors."""

    U: torch.Tensor  # (out, R)
    S: torch.Tensor  # (R,)
    Vh: torch.Tensor  # (R, in)

    def truncate(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) of the best rank-k approximation, the singular values split evenly between them."""
        root = self.S[:k].sqrt()
        return root[:, None] * self.Vh[:k], self.U[:, :k] * root[None, :]

    def relative_error(self, k: int) -> float:
        total = float((self.S**2).sum())
        return 0.0 if total == 0 else float((self.S[k:] ** 2).sum() / total) ** 0.5


def factored_svd(B: torch.Tensor, A: torch.Tensor) -> Spectrum:
    """SVD of B @ A (B: out×R, A: R×in) without forming the product."""
    B, A = B.to(COMPUTE), A.to(COMPUTE)
    Q_B, R_B = torch.linalg.qr(B)  # (out, R'), (R', R)
    Q_A, R_A = torch.linalg.qr(A.T)  # (in, R''), (R'', R)
    U_c, S, Vh_c = torch.linalg.svd(R_B @ R_A.T, full_matrices=False)  # core: (R', R'')
    return Spectrum(Q_B @ U_c, S, Vh_c @ Q_A.T)


def singular_values(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Singular values of B @ A only (QR without Q): what a global budget needs to choose ranks."""
    R_B = torch.linalg.qr(B.to(COMPUTE), mode="r").R
    R_A = torch.linalg.qr(A.to(COMPUTE).T, mode="r").R
    return torch.linalg.svdvals(R_B @ R_A.T)


def check_target(rank: int | None, energy: float | None, budget: int | None) -> None:
    if sum(x is not None for x in (rank, energy, budget)) != 1:
        raise ValueError("give exactly one of rank=, energy= or budget=")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    if energy is not None and not 0.0 < float(energy) <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")


def rank_for(S: torch.Tensor, module: str, rank: int | None, energy: float | None) -> int:
    if rank is not None:
        if rank > S.numel():
            raise ValueError(f"rank {rank} is more than the {S.numel()} available in {module} "
                             f"(at most the sum of the inputs' ranks and the layer's size)")
        return rank
    power = S**2
    total = float(power.sum())
    if total == 0:
        return 1
    kept = torch.cumsum(power, 0) / total
    return min(int((kept < energy - 1e-12).sum()) + 1, S.numel())


def ranks_for_budget(values: dict[str, torch.Tensor], shapes: dict[str, tuple[int, int]], budget: int) -> dict[str, int]:
    """Greedy: every module keeps rank 1, then the next singular direction with the most squared
    norm per parameter (in + out) joins while the total parameter count stays within budget."""
    cost = {m: out_f + in_f for m, (out_f, in_f) in shapes.items()}
    minimum = sum(cost.values())
    if budget < minimum:
        raise ValueError(f"budget {budget} parameters is below the {minimum} needed for rank 1 in every module")
    ranks = {m: 1 for m in values}
    candidates = sorted(((float(S[j] ** 2) / cost[m], m, j) for m, S in values.items() for j in range(1, S.numel())),
                        key=lambda c: -c[0])
    used = minimum
    for _, m, j in candidates:
        if j == ranks[m] and used + cost[m] <= budget:  # directions join in order within a module
            ranks[m] += 1
            used += cost[m]
    return ranks


def reduce_factors(pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor]], *, rank: int | None = None,
                   energy: float | None = None, ranks: dict[str, int] | None = None, dtype: torch.dtype = torch.float32
                   ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, float]]:
    """Truncate module after module — (module, A, B) in, ({module: (A, B)}, {module: relative error}) out —
    so peak memory is one module's decomposition, not the model's."""
    factors, errors = {}, {}
    for module, A, B in pairs:
        spectrum = factored_svd(B, A)
        k = ranks[module] if ranks is not None else rank_for(spectrum.S, module, rank, energy)
        A_k, B_k = spectrum.truncate(k)
        factors[module] = (A_k.to(dtype), B_k.to(dtype))
        errors[module] = round(spectrum.relative_error(k), 8)
    return factors, errors


def reduce_rank(adapter: LoraAdapter, rank: int | None = None, *, energy: float | None = None,
                budget: int | None = None) -> LoraAdapter:
    """The optimal rank-k approximation of each module's ΔW (k fixed, by energy fraction, or by a total
    parameter budget). At full rank the result is exact. Per-module relative Frobenius errors are in
    `result.provenance["relative_error"]`."""
    check_target(rank, energy, budget)
    dtype = next(iter(adapter.modules.values())).A.dtype
    ranks = None
    if budget is not None:
        values = {m: singular_values(*reversed(adapter.folded(m, COMPUTE))) for m in adapter.modules}
        shapes = {m: (int(f.B.shape[0]), int(f.A.shape[1])) for m, f in adapter.modules.items()}
        ranks = ranks_for_budget(values, shapes, int(budget))
    pairs = ((m, *adapter.folded(m)) for m in adapter.modules)
    factors, errors = reduce_factors(pairs, rank=rank, energy=energy, ranks=ranks, dtype=dtype)
    prov = provenance("reduce_rank", [adapter], rank=rank, energy=energy, budget=budget)
    record_errors(prov, errors)
    return from_factors(factors, adapter, prov)
