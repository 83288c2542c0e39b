"""Merging 4 rank-16 LoRA adapters of one 4096×4096 layer down to rank 16, three ways, same adapters:

  ours   ops.reduce_rank(ops.linear(adapters, weights), rank=16)       factored SVD: QR + 64×64 core
  PEFT   model.add_weighted_adapter(..., combination_type="svd", svd_rank=16)
  dense  torch.linalg.svd(Σ w_i s_i B_i A_i) truncated to 16        the reference

Prints each time, the speed ratios, and each result's relative difference to the dense reference.
Target (issue: adapter arithmetic): ours >= 1000x faster than PEFT's path, within 1e-4 of the reference.
Run:  python benchmarks/bench_svd_merge.py [--dim 4096] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import torch
from _results import emit  # benchmarks/ is on sys.path when a script runs
from torch import nn

from adapter_hub import LoraAdapter, LoraConfig, ops
from adapter_hub.core.factors import ModuleFactors


class OneLayer(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        return self.proj(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--inputs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of our path (it is milliseconds)")
    parser.add_argument("--json")
    args = parser.parse_args()
    import peft

    torch.manual_seed(0)
    dim, r, n = args.dim, args.rank, args.inputs
    weights = [0.4, 0.3, 0.2, 0.1][:n] if n <= 4 else [1.0 / n] * n
    alpha = 2.0 * r
    model = peft.get_peft_model(OneLayer(dim), peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"],
                                                               init_lora_weights=False), adapter_name="a0")
    for i in range(1, n):
        model.add_adapter(f"a{i}", peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"],
                                                   init_lora_weights=False))
    layer = model.base_model.model.proj
    adapters = []
    for i in range(n):
        with torch.no_grad():
            layer.lora_A[f"a{i}"].weight.normal_(0, 1 / dim**0.5)
            layer.lora_B[f"a{i}"].weight.normal_(0, 0.02)
        A, B = layer.lora_A[f"a{i}"].weight.detach().clone(), layer.lora_B[f"a{i}"].weight.detach().clone()
        adapters.append(LoraAdapter({"proj": ModuleFactors(A, B)}, LoraConfig(r=r, alpha=alpha, target_modules=["proj"])))
    scaling = alpha / r

    # dense reference: the exact sum, then a full SVD
    start = time.perf_counter()
    dense = sum(w * scaling * (a.modules["proj"].B.double() @ a.modules["proj"].A.double()) for a, w in zip(adapters, weights))
    U, S, Vh = torch.linalg.svd(dense.float(), full_matrices=False)
    reference = ((U[:, :r] * S[:r]) @ Vh[:r]).double()
    t_dense = time.perf_counter() - start

    def ours():
        return ops.reduce_rank(ops.linear(adapters, weights), rank=r)

    ours()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        merged = ours()
        times.append(time.perf_counter() - start)
    t_ours = sorted(times)[len(times) // 2]
    ours_delta = merged.delta_weight("proj", torch.float64)

    start = time.perf_counter()
    model.add_weighted_adapter([f"a{i}" for i in range(n)], weights, "svd_merged", combination_type="svd", svd_rank=r)
    t_peft = time.perf_counter() - start
    peft_delta = layer.get_delta_weight("svd_merged").double()

    def rel(x):
        return float((x - reference).norm() / reference.norm())

    results = {
        "shape": f"{n} x rank {r} at {dim}x{dim} -> rank {r}", "torch": torch.__version__, "peft": peft.__version__,
        "ours_s": t_ours, "peft_s": t_peft, "dense_svd_s": t_dense,
        "speedup_vs_peft": t_peft / t_ours, "speedup_vs_dense": t_dense / t_ours,
        "ours_rel_diff_to_dense": rel(ours_delta), "peft_rel_diff_to_dense": rel(peft_delta),
        "singular_values_rel_diff": float((torch.linalg.svdvals(ours_delta)[:r] - S[:r].double()).norm() / S[:r].norm()),
    }
    emit(results, args.json, spec=".6g")


if __name__ == "__main__":
    main()
