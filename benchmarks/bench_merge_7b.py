"""A whole Llama-7B-shaped adapter set: 32 layers × (q, k, v, o, gate, up, down), 4 inputs of rank 16.

  1. linear merge + reduce to rank 16 (factored; target < 10 s on a 2-core CPU), peak memory;
  2. TIES at density 0.3, dense per module, factored back to rank 16: time and peak memory;
  3. the spectral merges (iso_c, iso_cts, tsv, knots_ties), computed from the factors, at their
     defaults and at full rank Σ r_i (target: each < 30 s and < 1 GB above the start on 2 cores).

Peak memory is the resident-set peak above the level before the operation, sampled every 5 ms.
Run:  python benchmarks/bench_merge_7b.py [--layers 32] [--skip-ties] [--skip-spectral] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import threading
import time

import psutil
import torch

from adapter_hub import LoraAdapter, LoraConfig, ops
from adapter_hub.core.factors import ModuleFactors

merge_module = importlib.import_module("adapter_hub.ops.merge")  # the module (ops.merge is the function)

HIDDEN, INTER = 4096, 11008
SPECTRAL = ("iso_c", "iso_cts", "tsv", "knots_ties")
SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
          "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
          "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER)}


class PeakRSS:
    """Samples this process's resident set size in a thread; .peak_mb is the peak above the start
    (taken after returning freed heap pages to the system)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.base = self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRSS":
        # Freed heap pages from building the inputs still count as resident; give them back first, or
        # a merge that trims (ops.merge does) would read as using less than its own result.
        trim = merge_module._malloc_trim()
        if trim is not None:
            trim(0)
        self.base = self.peak = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def make_adapter(seed: int, layers: int, rank: int) -> LoraAdapter:
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for layer in range(layers):
        for name, (out_f, in_f) in SHAPES.items():
            modules[f"model.layers.{layer}.{name}"] = ModuleFactors(
                torch.randn(rank, in_f, generator=g) / in_f**0.5, torch.randn(out_f, rank, generator=g) * 0.01)
    return LoraAdapter(modules, LoraConfig(r=rank, alpha=2.0 * rank, target_modules=sorted(modules)))


def time_one(adapters, method: str) -> dict:
    with PeakRSS() as mem:
        start = time.perf_counter()
        merged = ops.merge(adapters, method)
        seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "peak_mb_above_start": round(mem.peak_mb, 1),
            "result_rank": max(f.A.shape[0] for f in merged.modules.values()),
            "result_mb": round(merged.num_parameters() * 4 / 2**20, 1), "target_seconds": 30, "target_peak_mb": 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--inputs", type=int, default=4)
    parser.add_argument("--skip-ties", action="store_true")
    parser.add_argument("--skip-spectral", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--only", choices=SPECTRAL, help=argparse.SUPPRESS)  # one method, JSON on stdout
    args = parser.parse_args()
    adapters = [make_adapter(i, args.layers, args.rank) for i in range(args.inputs)]
    if args.only:
        print(json.dumps(time_one(adapters, args.only)))
        return
    weights = [1.0 / args.inputs] * args.inputs
    n_modules = len(adapters[0].modules)
    input_mb = sum(a.num_parameters() for a in adapters) * 4 / 2**20
    results: dict[str, object] = {"modules": n_modules, "inputs": args.inputs, "rank": args.rank,
                                  "input_adapters_mb": round(input_mb, 1), "threads": torch.get_num_threads()}
    print(f"{args.inputs} adapters x {n_modules} modules, rank {args.rank}: {input_mb:.0f} MB of factors", flush=True)

    with PeakRSS() as mem:
        start = time.perf_counter()
        merged = ops.merge(adapters, "linear", weights, rank=args.rank)
        seconds = time.perf_counter() - start
    results["linear_merge_reduce"] = {"seconds": round(seconds, 2), "peak_mb_above_start": round(mem.peak_mb, 1),
                                      "max_relative_error": merged.provenance["max_relative_error"],
                                      "target_seconds": 10}
    print(f"linear merge + reduce to rank {args.rank}: {seconds:.2f} s, peak +{mem.peak_mb:.0f} MB, "
          f"max relative error {merged.provenance['max_relative_error']:.3f}", flush=True)

    if not args.skip_ties:
        with PeakRSS() as mem:
            start = time.perf_counter()
            ties = ops.merge(adapters, "ties", weights, density=0.3, rank=args.rank)
            seconds = time.perf_counter() - start
        largest = max(o * i for o, i in SHAPES.values()) * 4 / 2**20
        results["ties_dense"] = {"seconds": round(seconds, 1), "peak_mb_above_start": round(mem.peak_mb, 1),
                                 "largest_module_dense_mb": round(largest, 1),
                                 "max_relative_error": ties.provenance["max_relative_error"]}
        print(f"TIES density 0.3, dense per module, to rank {args.rank}: {seconds:.1f} s, peak +{mem.peak_mb:.0f} MB "
              f"(one dense {SHAPES['mlp.up_proj']} module is {largest:.0f} MB); max relative error of the rank-"
              f"{args.rank} factoring {ties.provenance['max_relative_error']:.3f}", flush=True)
    if not args.skip_spectral:
        # Each in a fresh process: memory freed by an earlier merge stays in this one's resident set and
        # would hide the next method's peak.
        for method in SPECTRAL:
            out = subprocess.run([sys.executable, __file__, "--only", method, "--layers", str(args.layers),
                                  "--rank", str(args.rank), "--inputs", str(args.inputs)],
                                 capture_output=True, text=True, check=True).stdout
            results[method] = json.loads(out.strip().splitlines()[-1])
            r = results[method]
            print(f"{method} (factored, result rank {r['result_rank']}): {r['seconds']:.2f} s, "
                  f"peak +{r['peak_mb_above_start']:.0f} MB (the rank-{r['result_rank']} result itself: "
                  f"{r['result_mb']:.0f} MB)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
