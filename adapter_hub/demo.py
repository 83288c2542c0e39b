"""`adapter-hub demo`: the whole idea on a laptop CPU in a few minutes, offline.

Loads SmolLM2-135M-Instruct from the packaged GGUF, attaches LoRA, trains a built-in task for a few
dozen steps, saves the adapter as a PEFT folder and shows the model's answers before and after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class DemoConfig:
    base_model: str = "smollm2-135m"  # the packaged real model; "tiny-llama" runs the same in seconds
    task: str = "topic"  # a built-in task the base model cannot answer in the trained format
    steps: int = 40  # ~1.5 s per step on a 2-core CPU keeps the demo near a minute of training
    batch_size: int = 4
    lr: float = 1e-3  # short runs want the high end of LoRA's range
    rank: int = 8
    max_train: int = 160  # 40 steps x 4 examples: each training example seen once
    max_test: int = 64
    out: str = "demo-out"
    seed: int = 0


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> dict:
    import torch

    from adapter_hub import LoraAdapter, LoraConfig, attach, load_base_model, load_tokenizer
    from adapter_hub.data import load_task
    from adapter_hub.evaluate import EvalConfig, score
    from adapter_hub.train import TrainConfig, train_task

    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    echo(f"loading {config.base_model} ...")
    model = load_base_model(config.base_model)
    tokenizer = load_tokenizer(config.base_model)
    task = load_task(f"builtin:{config.task}", max_train=config.max_train, max_test=config.max_test, seed=config.seed)
    echo(f"  {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, loaded in {time.perf_counter() - t0:.1f}s")
    echo(f"task {task.name}: {len(task.train)} train / {len(task.test)} test, labels {task.labels}")

    generate = EvalConfig(scorer="generate", max_length=128)
    before = score(model, tokenizer, task, config=generate)["current"]
    attach(model, LoraConfig(r=config.rank), name=task.name, seed=config.seed)
    echo(f"training LoRA r={config.rank} on all linear layers for {config.steps} steps ...")
    result = train_task(model, tokenizer, task, TrainConfig(lr=config.lr, steps=config.steps,
                                                            batch_size=config.batch_size, max_length=128,
                                                            seed=config.seed))
    summary = result.summary()
    echo(f"  loss {summary['first']:.3f} -> {summary['last']:.3f} in {result.seconds:.0f}s")
    after = score(model, tokenizer, task, config=generate)["current"]
    out = Path(config.out) / task.name
    LoraAdapter.from_model(model, task.name).save(out)
    echo(f"saved the adapter (PEFT format) to {out}/")
    echo("")
    echo(f"{'input':<44} {'target':<9} {'before':<16} after")
    for ex, b, a in list(zip(task.test, before.predictions, after.predictions))[:8]:
        echo(f"{ex.text[:43]:<44} {ex.target:<9} {_oneline(b)[:15]:<16} {_oneline(a)}")
    echo("")
    echo(f"exact-match accuracy: before {before.accuracy:.0%}, after {after.accuracy:.0%} "
         f"({len(task.test)} test examples); total {time.perf_counter() - t0:.0f}s")
    return {"before": before.accuracy, "after": after.accuracy, "loss": summary, "adapter": str(out)}


def _oneline(text: str) -> str:
    return " ".join(text.split()) or "(empty)"
