"""AdamW over a model's LoRA factors: the foreach kernels vs PyTorch's per-parameter loop (its CPU
default, which train_on keeps: see RESULTS), same parameters and gradients, interleaved, medians;
the updated parameters are compared bit for bit.

Run:  python benchmarks/bench_optimizer.py [--model tiny-llama] [--steps 200] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _results import emit  # benchmarks/ is on sys.path when a script runs

from adapter_hub import LoraConfig, attach
from adapter_hub.lora import lora_parameters
from adapter_hub.models.loading import load_base_model


def run(factors: list[torch.Tensor], grads: list[list[torch.Tensor]], steps: int, foreach: bool
        ) -> tuple[float, list[torch.Tensor]]:
    """Seconds per optimizer step, and the parameters after `steps` steps from the same start."""
    params = [torch.nn.Parameter(f.clone()) for f in factors]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, foreach=foreach)
    for p in params:
        p.grad = torch.zeros_like(p)
    start = time.perf_counter()
    for step in range(steps):
        for p, g in zip(params, grads[step % len(grads)]):
            p.grad.copy_(g)  # the same gradients for both paths, without allocating in the timed loop
        optimizer.step()
    return (time.perf_counter() - start) / steps, [p.detach() for p in params]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    model = attach(load_base_model(args.model), LoraConfig(r=args.r, alpha=2 * args.r), name="a", seed=0)
    factors = [p.detach() for p in lora_parameters(model, ["a"])]
    gen = torch.Generator().manual_seed(0)
    grads = [[torch.randn(f.shape, generator=gen) for f in factors] for _ in range(20)]
    times: dict[bool, list[float]] = {True: [], False: []}
    after: dict[bool, list[torch.Tensor]] = {}
    for _ in range(args.repeats):
        for foreach in (False, True):
            seconds, after[foreach] = run(factors, grads, args.steps, foreach)
            times[foreach].append(seconds)
    loop_ms, foreach_ms = (statistics.median(times[k]) * 1e3 for k in (False, True))
    emit({"model": args.model, "lora_factors": len(factors), "steps": args.steps, "repeats": args.repeats,
          "loop_ms_per_step": loop_ms, "foreach_ms_per_step": foreach_ms, "foreach_over_loop": foreach_ms / loop_ms,
          "bit_identical": all(torch.equal(a, b) for a, b in zip(after[True], after[False]))}, args.json, width=20)


if __name__ == "__main__":
    main()
