"""A training step beside k frozen LoRA components: one branch each against their one summed branch.

inc, O-LoRA, N-LoRA and InfLoRA train task k+1 with the k earlier components frozen and active.
Strategy.train runs them as their exact sum (continual/frozen.py); this measures what that saves on
the real training loop (training.loop.train_on), against the step with no frozen component at all
(seq's step: the floor the summed branch can approach). Interleaved repeats, medians; each variant
starts from the same adapters and data order, and their losses are compared (the same function, so
they differ by rounding only).

    python benchmarks/bench_frozen_sum.py --task ../shared/data/cl_benchmark/agnews --frozen 3
"""

from __future__ import annotations

import argparse
import statistics

import torch

from _results import emit
from adapter_hub import LoraConfig, attach, load_base_model, load_tokenizer
from adapter_hub.continual.frozen import frozen_as_one
from adapter_hub.data import load_task
from adapter_hub.data.prompts import encode_examples
from adapter_hub.lora import detach, lora_layers, lora_parameters, set_active
from adapter_hub.training.config import TrainConfig
from adapter_hub.training.loop import train_on

VARIANTS = ("one_by_one", "summed", "no_frozen")


def with_frozen(model, k: int, lora: LoraConfig) -> list[str]:
    """k frozen components with non-zero B (as trained ones are), active at weight 1."""
    names = [f"c{i}" for i in range(k)]
    for i, name in enumerate(names):
        attach(model, lora, name=name, seed=i, activate="add", trainable=False)
        with torch.no_grad():
            for _, layer in lora_layers(model):
                layer.lora_B[name].normal_(0, 0.02, generator=torch.Generator().manual_seed(100 + i))
    return names


def run(model, variant: str, frozen: list[str], examples, train: TrainConfig, pad_id: int, lora: LoraConfig):
    attach(model, lora, name="new", seed=99, activate="add")
    set_active(model, ["new"] if variant == "no_frozen" else [*frozen, "new"])
    try:
        params = lora_parameters(model, ["new"])
        if variant == "summed":
            with frozen_as_one(model, ["new"]) as fused:
                assert fused
                return train_on(model, examples, train, pad_id=pad_id, params=params)
        return train_on(model, examples, train, pad_id=pad_id, params=params)
    finally:
        detach(model, "new")


def measure(model_name: str, task_spec: str, *, dtype: str, k: int, seq: int, batch: int, steps: int,
            repeats: int) -> dict:
    tokenizer = load_tokenizer(model_name)
    task = load_task(task_spec, max_train=batch * steps)
    examples, _ = encode_examples(tokenizer, task, list(task.train), seq)
    train = TrainConfig(lr=1e-3, steps=steps, batch_size=batch, max_length=seq, progress=False)
    lora = LoraConfig(r=8, alpha=32)
    model = load_base_model(model_name, dtype=dtype)
    frozen = with_frozen(model, k, lora)
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    losses: dict[str, list[float]] = {}
    for _ in range(repeats):
        for v in VARIANTS:
            result = run(model, v, frozen, examples, train, tokenizer.pad_token_id, lora)
            seconds[v].append(result.seconds / steps)
            losses[v] = result.losses
    out: dict = {"task": task.name, "dtype": dtype, "frozen_components": k, "seq": seq, "batch": batch,
                 "threads": torch.get_num_threads()}
    for v in VARIANTS:
        out[f"{v}_s_per_step"] = statistics.median(seconds[v])
    out["summed_over_one_by_one"] = out["summed_s_per_step"] / out["one_by_one_s_per_step"]
    out["one_by_one_over_no_frozen"] = out["one_by_one_s_per_step"] / out["no_frozen_s_per_step"]
    out["summed_over_no_frozen"] = out["summed_s_per_step"] / out["no_frozen_s_per_step"]
    out["max_loss_difference_summed_vs_one_by_one"] = max(
        abs(a - b) for a, b in zip(losses["summed"], losses["one_by_one"], strict=True))
    # the scale of a real difference: what leaving the components out does to the same losses
    out["max_loss_difference_no_frozen_vs_one_by_one"] = max(
        abs(a - b) for a, b in zip(losses["no_frozen"], losses["one_by_one"], strict=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="../shared/data/cl_benchmark/agnews", help="a data folder or built-in task")
    parser.add_argument("--dtype", default="bf16", help="the frozen base's dtype (the regime config's)")
    parser.add_argument("--frozen", type=int, default=3, help="frozen components (3: the regime's fourth task)")
    parser.add_argument("--seq", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    emit(measure(args.model, args.task, dtype=args.dtype, k=args.frozen, seq=args.seq, batch=args.batch,
                 steps=args.steps, repeats=args.repeats), args.json, width=40)


if __name__ == "__main__":
    main()
