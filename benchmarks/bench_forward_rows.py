"""Why routing cannot beat a one-adapter loop by much on a CPU: time per batch row of a tiny-model
forward as the batch grows, with one adapter active (what the loop runs) and with rows routed over
4 adapters + base (what the routed evaluation runs). Once the per-row time is flat, a forward is
compute-bound, and serving 5 states costs 5 rows whether or not they share a forward.

Run: python benchmarks/bench_forward_rows.py [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _results import emit  # benchmarks/ is on sys.path when a script runs

from adapter_hub import LoraConfig, attach, load_base_model
from adapter_hub.lora import route, set_active


def per_row_ms(fn, rows: int, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return 1000 * statistics.median(samples) / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=65, help="tokens per row (the built-in prompts' mean)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args()
    model = load_base_model("tiny-llama").eval()
    for i in range(4):
        attach(model, LoraConfig(r=8, alpha=16), name=f"a{i}", seed=i, activate="none")
    results = {}
    for rows in (1, 8, 32, 160):
        ids = torch.randint(0, 256, (rows, args.tokens), generator=torch.Generator().manual_seed(rows))
        mix = [f"a{i % 5}" if i % 5 < 4 else None for i in range(rows)]

        def one_adapter():
            with torch.inference_mode():
                model(input_ids=ids)

        def routed():
            with torch.inference_mode(), route(model, mix):
                model(input_ids=ids)

        set_active(model, ["a0"])
        results[f"rows{rows}_one_adapter_ms_per_row"] = per_row_ms(one_adapter, rows, args.repeats)
        set_active(model, [])
        results[f"rows{rows}_routed_ms_per_row"] = per_row_ms(routed, rows, args.repeats)
    emit(results, args.json, width=34)


if __name__ == "__main__":
    main()
