"""Spectrum-aware merges (Iso-C, Iso-CTS, TSV-Merge, KnOTS-TIES), computed from the LoRA factors.

Every method here works on SVDs of task updates ΔW_i = w_i·s_i·B_i·A_i. A module's updates together
have rank R ≤ Σ r_i, so each SVD is a factored one (QR of the stacked factors + an SVD of a small
core, ops.svd.factored_svd): no dense out×in matrix is ever formed, and every result is returned as
factors (A, B) of rank ≤ R, exactly what the method defines (no truncation afterwards).

    iso_c       Marczak et al., ICML 2025 (arXiv 2502.04959): ΔW = Σ_i ΔW_i = U S Vᵀ; replace S by
                its mean: α·mean(S)·U Vᵀ.
    iso_cts     same paper: the top directions of the sum (common subspace), the rest of the budget
                shared equally by each task's own top directions outside it (task-specific
                subspaces); both bases orthogonalised (polar factor), spectrum flattened as in Iso-C.
    tsv         Gargiulo et al., CVPR 2025 (arXiv 2412.00081), TSV-Merge: each task's top singular
                triplets, the stacked U's and V's each replaced by their nearest orthogonal matrix
                (polar factor, U Vᵀ of their SVD), ΔW = α·U⊥·diag(S)·V⊥ᵀ.
    knots_ties  Stoica et al., ICLR 2025 (arXiv 2410.19735), KnOTS: SVD of the updates side by side,
                [ΔW_1 … ΔW_n] = U S [V_1ᵀ … V_nᵀ]; TIES on the aligned task coordinates S·V_iᵀ;
                ΔW = U·TIES(S·V_iᵀ).

Deviations from the papers, all forced by low-rank inputs or by our per-module design:
  - Spectra are taken over the non-zero part (singular values above 1e-9 of the largest). The papers'
    full-rank task vectors have no null part; a LoRA sum of rank R in a 576×576 layer has 576 − R
    zero singular values, and averaging over them (or keeping their arbitrary singular vectors, as
    the full-rank code would) would make Iso-C a near-zero, random-direction update.
  - Iso-CTS's budget is that rank R, not min(out, in): the common subspace is the top
    ⌊R·common_fraction⌋ directions (rounded so the rest splits evenly over the tasks).
  - TSV keeps each task's whole rank by default (keep = 1): its 1/T of a full-rank spectrum exists
    so that T tasks fill min(out, in) dimensions, which T LoRAs of rank r already do when
    T·r ≤ min(out, in). Where they would not, each task is cut to ⌊min(out, in) / T⌋.
  - KnOTS keeps directions by relative, not absolute (1e-5), size, and TIES trims each module on its
    own (the KnOTS code trims over all layers at once), as the rest of adapter-hub's masked methods do.
  - α (and KnOTS's λ) default to 1. The papers tune this scale on held-out data (Iso: per model;
    KnOTS's configs use 0.5–0.6); pick it on validation data (merge --eval, benchmarks/).
"""

from __future__ import annotations

import torch

from adapter_hub.ops.methods.catalogue import Param, merge_method
from adapter_hub.ops.methods.masked import generalized
from adapter_hub.ops.svd import COMPUTE, factored_svd

RELATIVE_ZERO = 1e-9  # singular values below this fraction of the largest are the update's null part

ALPHA = Param("alpha", 1.0, help="scale of the merged update (the papers tune it on validation data)",
              bounds=(0.0, float("inf")))
COMMON = Param("common_fraction", 0.8, help="share of the rank budget given to the common subspace (Iso-CTS)",
               bounds=(0.0, 1.0))
KEEP = Param("keep", 1.0, help="fraction of each task's rank kept (TSV; capped so the tasks fit the layer)",
             bounds=(0.0, 1.0))
KNOTS_DENSITY = Param("density", 0.2, help="fraction of each task's aligned coordinates kept by TIES (KnOTS: 0.2)",
                      bounds=(0.0, 1.0))
KNOTS_LAMBDA = Param("lambda", 1.0, help="scale of the merged update (KnOTS tunes it: 0.5-0.6 in its configs)",
                     bounds=(0.0, float("inf")))


def _updates(adapters, weights, module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(A_i, w_i·s_i·B_i) in float64 for every adapter that has the module."""
    out = []
    for a, w in zip(adapters, weights):
        pair = a.folded(module, COMPUTE)
        if pair is not None:
            out.append((pair[0], pair[1] * w))
    return out


def _nonzero(S: torch.Tensor) -> int:
    """How many singular values belong to the update (the rest is numerical zero)."""
    if S.numel() == 0 or float(S[0]) == 0.0:
        return 0
    return int((S > S[0] * RELATIVE_ZERO).sum())


def _polar(M: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (Frobenius): P·Qᵀ from M = P·Σ·Qᵀ."""
    P, _, Qh = torch.linalg.svd(M, full_matrices=False)
    return P @ Qh


def _top(spectrum, k: int):
    """The k leading singular triplets (U, S, Vh) of a Spectrum."""
    return spectrum.U[:, :k], spectrum.S[:k], spectrum.Vh[:k]


def _orthogonalised(triplets):
    """Stack (U_i, S_i, Vh_i) and replace the stacked U's and V's by their nearest orthonormal matrices
    (polar factors): (U⊥, S, V⊥ᵀ) — what TSV-Merge and Iso-CTS both do before rebuilding ΔW."""
    U = _polar(torch.cat([u for u, _, _ in triplets], 1))
    V = _polar(torch.cat([vh for _, _, vh in triplets], 0).T)
    return U, torch.cat([s for _, s, _ in triplets]), V.T


def _sum_spectrum(pairs):
    A_s = torch.cat([A for A, _ in pairs], 0)
    B_s = torch.cat([B for _, B in pairs], 1)
    spectrum = factored_svd(B_s, A_s)
    return _top(spectrum, _nonzero(spectrum.S))


def _zero(pairs):
    A, B = pairs[0]
    return A[:1] * 0, B[:, :1] * 0


@merge_method("iso_c", kind="factored", params=(ALPHA,),
              title="Iso-C: task arithmetic with a flat (isotropic) spectrum",
              reference="Marczak et al. 2025, No Task Left Behind: Isotropic Model Merging, https://arxiv.org/abs/2502.04959")
def iso_c(adapters, weights, modules, params):
    out = {}
    for m in modules:
        pairs = _updates(adapters, weights, m)
        U, S, Vh = _sum_spectrum(pairs)
        if S.numel() == 0:
            out[m] = _zero(pairs)
            continue
        out[m] = (Vh, U * (params["alpha"] * S.mean()))
    return out


@merge_method("iso_cts", kind="factored", params=(ALPHA, COMMON),
              title="Iso-CTS: common and task-specific subspaces, isotropic spectrum",
              reference="Marczak et al. 2025, No Task Left Behind: Isotropic Model Merging, https://arxiv.org/abs/2502.04959")
def iso_cts(adapters, weights, modules, params):
    out = {}
    for m in modules:
        pairs = _updates(adapters, weights, m)
        U, S, Vh = _sum_spectrum(pairs)
        budget, n = S.numel(), len(pairs)
        if budget == 0:
            out[m] = _zero(pairs)
            continue
        common = int(budget * params["common_fraction"])
        per_task = round((budget - common) / n)
        common = budget - per_task * n
        if per_task <= 0 or common <= 0:  # nothing left for the tasks (or for the common part): Iso-C
            out[m] = (Vh, U * (params["alpha"] * S.mean()))
            continue
        U_c = U[:, :common]
        triplets = []
        for A, B in pairs:  # each task outside the common subspace: (I − U_c U_cᵀ)·B·A
            own = factored_svd(B - U_c @ (U_c.T @ B), A)
            triplets.append(_top(own, min(per_task, _nonzero(own.S))))
        U_all, S_all, Vh_all = _orthogonalised([*triplets, (U_c, S[:common], Vh[:common])])
        out[m] = (Vh_all, U_all * (params["alpha"] * S_all.mean()))
    return out


@merge_method("tsv", kind="factored", params=(ALPHA, KEEP),
              title="TSV-Merge: task singular vectors, decorrelated (orthogonalised)",
              reference="Gargiulo et al. 2025, Task Singular Vectors: Reducing Task Interference in Model Merging, "
                        "https://arxiv.org/abs/2412.00081")
def tsv(adapters, weights, modules, params):
    out = {}
    for m in modules:
        pairs = _updates(adapters, weights, m)
        out_f, in_f = pairs[0][1].shape[0], pairs[0][0].shape[1]
        cap = max(1, min(out_f, in_f) // len(pairs))
        triplets = []
        for A, B in pairs:
            own = factored_svd(B, A)
            rank = _nonzero(own.S)
            triplets.append(_top(own, min(cap, rank, max(1, int(params["keep"] * rank))) if rank else 0))
        if sum(S.numel() for _, S, _ in triplets) == 0:
            out[m] = _zero(pairs)
            continue
        U_orth, S, Vh_orth = _orthogonalised(triplets)
        out[m] = (Vh_orth, U_orth * (params["alpha"] * S)[None, :])
    return out


@merge_method("knots_ties", kind="factored", params=(KNOTS_DENSITY, KNOTS_LAMBDA),
              title="KnOTS-TIES: align the LoRAs by one joint SVD, TIES on the aligned coordinates",
              reference="Stoica et al. 2025, Model merging with SVD to tie the KnOTS, https://arxiv.org/abs/2410.19735")
def knots_ties(adapters, weights, modules, params):
    out = {}
    for m in modules:
        pairs = _updates(adapters, weights, m)
        # [B_1A_1 … B_nA_n] = B_s·blockdiag(A_i) = Q_B R_B · blockdiag(R_iᵀ Q_iᵀ), with A_iᵀ = Q_i R_i
        Q_B, R_B = torch.linalg.qr(torch.cat([B for _, B in pairs], 1))
        qrs = [torch.linalg.qr(A.T) for A, _ in pairs]
        core = R_B @ torch.block_diag(*[R.T for _, R in qrs])
        U_c, S, Vh_c = torch.linalg.svd(core, full_matrices=False)
        k = _nonzero(S)
        if k == 0:
            out[m] = _zero(pairs)
            continue
        U, S, Vh_c = Q_B @ U_c[:, :k], S[:k], Vh_c[:k]
        cols = torch.cumsum(torch.tensor([0] + [R.shape[0] for _, R in qrs]), 0).tolist()
        coords = torch.stack([S[:, None] * (Vh_c[:, cols[i]:cols[i + 1]] @ Q.T)  # S·V_iᵀ: (k, in)
                              for i, (Q, _) in enumerate(qrs)])
        ones = torch.ones(len(pairs), dtype=COMPUTE)  # the weights are already in the updates
        # KnOTS's TIES: sign elected by the summed values, disjoint mean over the agreeing tasks
        merged = generalized(coords, ones, density=params["density"], how="magnitude", elect=True,
                             divisor="count", lam=params["lambda"])
        out[m] = (merged, U)
    return out
