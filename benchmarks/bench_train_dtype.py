"""The base model's dtype on a CPU: seconds per training step and per scored test example, fp32 vs bf16.

A continual-learning run on CPU is training steps plus scoring; both run the frozen base model on every
token. With `dtype = "bf16"` its weights (and so its matmuls) are bf16, while the LoRA factors and
Adam's state stay fp32 (models.resolve_dtype). CPUs with native bf16 matmuls (Intel AMX /
AVX512-BF16) run those faster. Elsewhere torch emulates the bf16 matmul, an order of magnitude slower,
so load_base_model has such a base multiply in fp32 from its bf16 operands (models.cpu_bf16); with
`--torch-bf16-kernel` that emulated kernel is measured too ("bf16_torch_kernel", the reference the
fp32 product replaces; slow: ~100 s per SmolLM2 step on an AVX2 EPYC). This prints each variant and
the ratios, measured in the same process, on the real training loop (training.loop.train_on: the
answer-only head, the shared instruction) and the real scorers (evaluation.score, both scorers).

    python benchmarks/bench_train_dtype.py --task ../shared/data/cl_benchmark/imdb --seq 96

Interleaved repeats (fp32, bf16, fp32, bf16, ...); medians. Each repeat starts from the same adapter
init and data order, so every variant runs the same batches.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _results import emit
from adapter_hub import LoraConfig, attach, load_base_model, load_tokenizer
from adapter_hub.data import load_task
from adapter_hub.data.prompts import encode_examples
from adapter_hub.evaluation import EvalConfig, score
from adapter_hub.lora import detach
from adapter_hub.models.cpu_bf16 import Fp32MatmulLinear
from adapter_hub.training.config import TrainConfig
from adapter_hub.training.loop import train_on

DTYPES = ("fp32", "bf16")
TORCH_KERNEL = "bf16_torch_kernel"  # bf16 through torch's own matmul, as if models.cpu_bf16 did not exist


def cpu_flags() -> str:
    """The CPU's native-bf16 flags (Linux), which decide whether bf16 can be faster here."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    return " ".join(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile")) or "none"


def measure(model_name: str, task_spec: str, *, seq: int, batch: int, steps: int, test: int, repeats: int,
            torch_kernel: bool = False) -> dict:
    """Medians per variant, the speed-ups, the dtype each base really ran in (its embedding's), and how
    many linear layers multiply in fp32 (models.cpu_bf16)."""
    tokenizer = load_tokenizer(model_name)
    task = load_task(task_spec, max_train=batch * steps, max_test=test)
    examples, _ = encode_examples(tokenizer, task, list(task.train), seq)
    train = TrainConfig(lr=1e-3, steps=steps, batch_size=batch, max_length=seq, progress=False)
    evaluate = EvalConfig(scorers=["generate", "loglik"], max_length=seq, batch_size=32, progress=False)
    models = {d: load_base_model(model_name, dtype=d) for d in DTYPES}
    if torch_kernel:
        models[TORCH_KERNEL] = load_base_model(model_name, dtype="fp32").to(torch.bfloat16)  # plain nn.Linear
    variants = list(models)
    step_s: dict[str, list[float]] = {d: [] for d in variants}
    example_s: dict[str, list[float]] = {d: [] for d in variants}
    accuracy: dict[str, float] = {}
    for _ in range(repeats):
        for d in variants:
            model = attach(models[d], LoraConfig(r=8, alpha=32), name="a", seed=0)
            result = train_on(model, examples, train, pad_id=tokenizer.pad_token_id)
            step_s[d].append(result.seconds / steps)
            start = time.perf_counter()
            scored = score(model, tokenizer, task, config=evaluate)
            example_s[d].append((time.perf_counter() - start) / len(task.test))
            accuracy[d] = next(iter(scored.values())).accuracy
            detach(model, "a")
    out: dict = {"cpu_bf16_flags": cpu_flags(), "threads": torch.get_num_threads(), "task": task.name,
                 "seq": seq, "batch": batch}
    for d in variants:
        out[f"{d}_fp32_matmul_layers"] = sum(isinstance(m, Fp32MatmulLinear) for m in models[d].modules())
        out[f"{d}_base_dtype"] = str(models[d].get_input_embeddings().weight.dtype).removeprefix("torch.")
        out[f"{d}_train_s_per_step"] = statistics.median(step_s[d])
        out[f"{d}_score_s_per_example"] = statistics.median(example_s[d])
        out[f"{d}_accuracy_after_training"] = accuracy[d]
    out["train_speedup_bf16"] = out["fp32_train_s_per_step"] / out["bf16_train_s_per_step"]
    out["score_speedup_bf16"] = out["fp32_score_s_per_example"] / out["bf16_score_s_per_example"]
    if torch_kernel:
        out["train_speedup_bf16_over_torch_kernel"] = out[f"{TORCH_KERNEL}_train_s_per_step"] / out["bf16_train_s_per_step"]
        out["score_speedup_bf16_over_torch_kernel"] = (out[f"{TORCH_KERNEL}_score_s_per_example"]
                                                       / out["bf16_score_s_per_example"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="../shared/data/cl_benchmark/imdb", help="a data folder or built-in task")
    parser.add_argument("--seq", type=int, default=96, help="tokens per example (inputs cut from the left)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="training steps per repeat")
    parser.add_argument("--test", type=int, default=48, help="test examples scored per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-bf16-kernel", action="store_true",
                        help="also time bf16 through torch's own matmul (the emulated kernel where the CPU lacks bf16)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    emit(measure(args.model, args.task, seq=args.seq, batch=args.batch, steps=args.steps, test=args.test,
                 repeats=args.repeats, torch_kernel=args.torch_bf16_kernel), args.json, width=40)


if __name__ == "__main__":
    main()
