"""On a small CPU: one cell with every core, or cells side by side with one thread each?

A bench run's local executor runs its cells one after the other, each with torch's default threads
(every core). Whether that keeps a 2-core machine busy depends on the work: a tiny model's step is a
few large matmuls that both threads share (RESULTS, issue 14: two cells side by side each ran ~2x
slower), while SmolLM2-135M's step at 96 tokens is many small and elementwise operations, which torch
runs on one thread. This measures it on the real training loop (training.loop.train_on) and the real
generate scorer (evaluation.score), in fresh processes:

- `one_all_threads`: one worker, torch's default threads (what the local executor does);
- `one_single_thread`: one worker, one thread;
- `side_by_side`: as many one-thread workers as cores, started together (what Ray's executor with
  `--max-parallel <cores> --threads 1` does on one machine).

It also says whether one thread computes the same losses bit for bit as all of them (a run mixing the
two would otherwise differ by rounding). Throughput is cells' work per second of wall time: workers / (seconds per step). The ratio that
matters is side_by_side's throughput against one_all_threads'.

    python benchmarks/bench_cpu_cells.py --task ../shared/data/cl_benchmark/agnews
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics

from _results import emit

VARIANTS = ("one_all_threads", "one_single_thread", "side_by_side")


def worker(args: dict, threads: int | None, barrier, out) -> None:
    """Load, warm up, wait for the others, then time `steps` training steps and `test` scored examples."""
    import time

    import torch

    if threads:
        torch.set_num_threads(threads)
    from adapter_hub import LoraConfig, attach, load_base_model, load_tokenizer
    from adapter_hub.data import load_task
    from adapter_hub.data.prompts import encode_examples
    from adapter_hub.evaluation import EvalConfig, score
    from adapter_hub.training.config import TrainConfig
    from adapter_hub.training.loop import train_on

    tokenizer = load_tokenizer(args["model"])
    task = load_task(args["task"], max_train=args["batch"] * args["steps"], max_test=args["test"])
    examples, _ = encode_examples(tokenizer, task, list(task.train), args["seq"])
    model = load_base_model(args["model"], dtype=args["dtype"])
    model = attach(model, LoraConfig(r=8, alpha=32), name="a", seed=0)
    warm = TrainConfig(lr=1e-3, steps=2, batch_size=args["batch"], max_length=args["seq"], progress=False)
    train_on(model, examples, warm, pad_id=tokenizer.pad_token_id)
    train = TrainConfig(lr=1e-3, steps=args["steps"], batch_size=args["batch"], max_length=args["seq"],
                        progress=False)
    evaluate = EvalConfig(scorers=["generate"], max_length=args["seq"], batch_size=32, progress=False)
    barrier.wait()  # side by side means side by side: nobody times its load beside another's step
    result = train_on(model, examples, train, pad_id=tokenizer.pad_token_id)
    start = time.perf_counter()
    score(model, tokenizer, task, config=evaluate)
    out.put({"step_s": result.seconds / args["steps"], "example_s": (time.perf_counter() - start) / len(task.test),
             "threads": torch.get_num_threads(), "losses": result.losses})


def run_variant(args: dict, variant: str, cores: int) -> list[dict]:
    workers, threads = {"one_all_threads": (1, None), "one_single_thread": (1, 1),
                        "side_by_side": (cores, 1)}[variant]
    ctx = mp.get_context("spawn")  # a fresh interpreter each: torch's thread pool is set before first use
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(args, threads, barrier, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"{variant}: a worker exited with {p.exitcode}")
    return results


def measure(args: dict, repeats: int) -> dict:
    cores = os.cpu_count() or 1
    step_s: dict[str, list[float]] = {v: [] for v in VARIANTS}
    example_s: dict[str, list[float]] = {v: [] for v in VARIANTS}
    threads: dict[str, int] = {}
    losses: dict[str, list[float]] = {}
    for _ in range(repeats):  # interleaved, so a drift in the machine's speed hits every variant alike
        for variant in VARIANTS:
            results = run_variant(args, variant, cores)
            step_s[variant].append(statistics.mean(r["step_s"] for r in results))
            example_s[variant].append(statistics.mean(r["example_s"] for r in results))
            threads[variant] = results[0]["threads"]
            losses[variant] = results[0]["losses"]  # every worker trains the same batches from the same init
    out: dict = {"cores": cores, "model": args["model"], "dtype": args["dtype"], "task": args["task"],
                 "seq": args["seq"], "batch": args["batch"]}
    workers = {"one_all_threads": 1, "one_single_thread": 1, "side_by_side": cores}
    for v in VARIANTS:
        out[f"{v}_threads_per_worker"] = threads[v]
        out[f"{v}_s_per_step"] = statistics.median(step_s[v])
        out[f"{v}_s_per_example"] = statistics.median(example_s[v])
    # One thread or two can split a reduction differently: is the computation the same bit for bit?
    out["losses_identical_one_vs_all_threads"] = losses["one_single_thread"] == losses["one_all_threads"]
    out["max_loss_difference_one_vs_all_threads"] = max(
        abs(a - b) for a, b in zip(losses["one_single_thread"], losses["one_all_threads"]))
    for kind, table in (("train", "s_per_step"), ("score", "s_per_example")):
        base = workers["one_all_threads"] / out[f"one_all_threads_{table}"]
        for v in VARIANTS[1:]:
            out[f"{kind}_throughput_{v}_vs_one_all_threads"] = workers[v] / out[f"{v}_{table}"] / base
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="../shared/data/cl_benchmark/agnews", help="a data folder or built-in task")
    parser.add_argument("--dtype", default="bf16", help="the base model's dtype (the regime's: bf16)")
    parser.add_argument("--seq", type=int, default=96, help="tokens per example (inputs cut from the left)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per worker and repeat")
    parser.add_argument("--test", type=int, default=32, help="test examples scored per worker and repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    a = parser.parse_args()
    args = {"model": a.model, "task": a.task, "dtype": a.dtype, "seq": a.seq, "batch": a.batch, "steps": a.steps,
            "test": a.test}
    emit(measure(args, a.repeats), a.json, width=48)


if __name__ == "__main__":
    main()
