"""Learning commands: demo and train. They import torch lazily (benchmarks and eval: bench_cmds)."""

from __future__ import annotations

import click

from adapter_hub.cli import cli, compute_options, pass_ctx

# Kept in step with adapter_hub.continual.STRATEGIES by a test; listed here so `--help` needs no torch import.
STRATEGY_NAMES = ["seq", "inc", "olora", "nlora", "inflora", "replay", "replay_gen", "ewc", "per_task", "mtl",
                  "merge"]


@cli.command()
@click.option("--base-model", default="smollm2-135m", show_default=True,
              help="Base model; tiny-llama tells the same story in about a minute.")
@click.option("--steps", default=24, show_default=True, help="Training steps per task.")
@click.option("--out", default="demo-out", show_default=True, help="Folder for the report (and the registry).")
@compute_options
@pass_ctx
def demo(ctx, base_model: str, steps: int, out: str) -> None:
    """Three tasks in sequence: seq forgets, replay remembers, per-task adapters merged (iso_c); then a report.

    Every state is registered (in OUT/registry unless --registry or ADAPTER_HUB_REGISTRY says otherwise).

    Example: adapter-hub demo --base-model tiny-llama --out /tmp/demo
    """
    from adapter_hub.demo import DemoConfig, run_demo

    run_demo(DemoConfig(base_model=base_model, steps=steps, out=out, registry=ctx.location), echo=click.echo)


@cli.command()
@click.option("--base-model", required=True, help="Base model: smollm2-135m, tiny-llama, a folder or a hub id.")
@click.option("--task", "task_name", required=True, help="Name of the task (the registry task the result joins).")
@click.option("--data", required=True, help="Task data: a folder (train/test .json/.jsonl/.csv [+ labels.json]), "
              "builtin:NAME or hf:DATASET.")
@click.option("--strategy", type=click.Choice(STRATEGY_NAMES),
              help="Continual-learning strategy (default seq, or the --from version's strategy).")
@click.option("--from", "from_ref", metavar="REF", help="Continue the sequence that produced this version.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Strategy parameter, e.g. lambda1=0.5.")
@click.option("--rank", default=16, show_default=True, help="LoRA rank.")
@click.option("--alpha", default=32.0, show_default=True, help="LoRA alpha (scaling alpha/rank).")
@click.option("--lr", default=5e-4, show_default=True, help="Learning rate.")
@click.option("--steps", type=int, help="Optimizer steps (overrides --epochs).")
@click.option("--epochs", default=1.0, show_default=True, help="Passes over the training data.")
@click.option("--batch-size", default=8, show_default=True, help="Examples per micro-batch.")
@click.option("--max-length", default=256, show_default=True, help="Tokens per example (inputs cut from the left).")
@click.option("--max-train", type=int, help="Use at most this many training examples (seeded sample).")
@click.option("--max-test", type=int, help="Use at most this many test examples (seeded sample).")
@click.option("--seed", default=0, show_default=True, help="Seed for data order, init and sampling (same seed, same adapter on CPU).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--dtype", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="Base model dtype: auto = bf16 on a CUDA device that supports it, else fp32 (LoRA stays fp32).")
@click.option("--eval/--no-eval", "evaluate", default=True, show_default=True, help="Score the new task after training.")
@compute_options
@pass_ctx
def train(ctx, base_model, task_name, data, strategy, from_ref, params, rank, alpha, lr, steps, epochs, batch_size,
          max_length, max_train, max_test, seed, device, dtype, evaluate) -> None:
    """Train on one task with a continual-learning strategy and register the result; prints its reference.

    Example: adapter-hub train --base-model tiny-llama --task topic --data builtin:topic --steps 20
    """
    import time

    from adapter_hub import LoraConfig
    from adapter_hub.cli.registry_cmds import _kv_pairs
    from adapter_hub.continual import ContinualConfig
    from adapter_hub.continual.runner import load_chain, run_sequence
    from adapter_hub.data import load_task
    from adapter_hub.models import load_base_model, load_tokenizer
    from adapter_hub.train import TrainConfig, resolve_device
    from registry.refs import check_name

    check_name(task_name)
    reg = ctx.registry(create=True)
    extra = {k: _parse_value(v) for k, v in _kv_pairs(params, "--param").items()}
    history, done = [], None
    if from_ref:
        previous_strategy, previous_params, history, done = load_chain(reg, from_ref)
        if strategy and strategy != previous_strategy:
            raise click.UsageError(f"{from_ref} was trained with strategy {previous_strategy!r}; continue it with "
                                   f"the same --strategy (or leave it out)")
        strategy = previous_strategy
        extra = {**previous_params, **extra}
    strategy = strategy or "seq"
    task = load_task(data, name=task_name, max_train=max_train, max_test=max_test, seed=seed)
    if any(t.name == task.name for t in history):
        raise click.UsageError(f"task {task.name!r} is already in this sequence; give the new task another --task name")
    config = ContinualConfig(LoraConfig(r=rank, alpha=alpha),
                             TrainConfig(lr=lr, steps=steps, epochs=epochs, batch_size=batch_size,
                                         max_length=max_length, seed=seed), seed=seed)
    model = load_base_model(base_model, device=resolve_device(device), dtype=dtype)
    tokenizer = load_tokenizer(base_model)
    run = f"train-{task.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = run_sequence(strategy, model, tokenizer, [*history, task], config, params=extra, registry=reg, run=run,
                          done=done)
    last, ref = result.steps[-1], result.refs[-1]
    summary = last.train.summary() if last.train else {}
    click.echo(ref)
    click.echo(f"{strategy} on {task.name}: {len(task.train)} examples, loss {summary.get('first', float('nan')):.3f}"
               f" -> {summary.get('last', float('nan')):.3f} in {summary.get('seconds', 0):.0f}s"
               + (f", {summary['truncated']} inputs truncated" if summary.get("truncated") else ""), err=True)
    if evaluate and task.is_classification:
        from adapter_hub.evaluate import EvalConfig, score
        from adapter_hub.lora import attach

        attach(model, last.state, name="scored")
        result_score = score(model, tokenizer, task, config=EvalConfig(max_length=max_length))["current"]
        reg.record_evaluation(ref, task=task.name, metric="accuracy", value=result_score.accuracy,
                              dataset=task.fingerprint(), scorer=result_score.scorer)
        click.echo(f"accuracy on {task.name} ({len(task.test)} test examples, {result_score.scorer}): "
                   f"{result_score.accuracy:.3f}", err=True)


def _parse_value(text: str):
    """--param values: numbers, true/false/none, else the string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
