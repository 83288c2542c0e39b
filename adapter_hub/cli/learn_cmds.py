"""Learning commands: demo and train. They import torch lazily (benchmarks and eval: bench_cmds)."""

from __future__ import annotations

import click

from adapter_hub.cli.main import cli, compute_options, pass_ctx
from adapter_hub.cli.registry_cmds import _kv_pairs
from adapter_hub.core.config import LoraConfig
from adapter_hub.data import load_task
from adapter_hub.models.names import DTYPE_SETTINGS
from registry.refs import check_name

# Kept in step with adapter_hub.continual.STRATEGIES by a test; listed here so `--help` needs no torch import.
STRATEGY_NAMES = ["seq", "inc", "olora", "nlora", "inflora", "replay", "replay_gen", "ewc", "per_task", "mtl",
                  "merge", "slao", "ella"]


@cli.command()
@click.option("--base-model", help="Base model (default: DemoConfig.base_model, the packaged SmolLM2); tiny-llama "
              "tells the same story in about a minute.")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps per task (default: DemoConfig.steps).")
@click.option("--out", help="Folder for the report (and the registry; default: DemoConfig.out).")
@compute_options
@pass_ctx
def demo(ctx, base_model: str | None, steps: int | None, out: str | None) -> None:
    """Three tasks in sequence: seq forgets, replay remembers, per-task adapters merged (iso_c); then a report.

    Every state is registered (in OUT/registry unless --registry or ADAPTER_HUB_REGISTRY says otherwise).

    Example: adapter-hub demo --base-model tiny-llama --out /tmp/demo
    """
    from adapter_hub.bench.demo import DemoConfig, run_demo

    given = {"base_model": base_model, "steps": steps, "out": out}  # the rest, and what is not given: DemoConfig's
    run_demo(DemoConfig(registry=ctx.location, **{k: v for k, v in given.items() if v is not None}), echo=click.echo)


@cli.command()
@click.option("--base-model", required=True, help="Base model: smollm2-135m, tiny-llama, a folder or a hub id.")
@click.option("--task", "task_name", required=True, help="Name of the task (the registry task the result joins).")
@click.option("--data", required=True, help="Task data: a folder (train/test .json/.jsonl/.csv [+ labels.json]), "
              "builtin:NAME or hf:DATASET.")
@click.option("--strategy", type=click.Choice(STRATEGY_NAMES),
              help="Continual-learning strategy (default seq, or the --from version's strategy).")
@click.option("--from", "from_ref", metavar="REF", help="Continue the sequence that produced this version.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Strategy parameter, e.g. lambda1=0.5.")
@click.option("--rank", type=int, help="LoRA rank (default: LoraConfig.r).")
@click.option("--alpha", type=float, help="LoRA alpha, scaling alpha/rank (default: LoraConfig.alpha).")
@click.option("--lr", type=float, help="Learning rate (default: TrainConfig.lr).")
@click.option("--steps", type=int, help="Optimizer steps (overrides --epochs).")
@click.option("--epochs", type=float, help="Passes over the training data (default: TrainConfig.epochs).")
@click.option("--batch-size", type=int, help="Examples per micro-batch (default: TrainConfig.batch_size).")
@click.option("--max-length", type=int, help="Tokens per example, inputs cut from the left (default: TrainConfig.max_length).")
@click.option("--max-train", type=int, help="Use at most this many training examples (seeded sample).")
@click.option("--max-test", type=int, help="Use at most this many test examples (seeded sample).")
@click.option("--seed", type=int, help="Seed for data order, init and sampling; same seed, same adapter on CPU "
              "(default: TrainConfig.seed).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--dtype", type=click.Choice(DTYPE_SETTINGS), default="auto", show_default=True,
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

    from adapter_hub.continual import ContinualConfig
    from adapter_hub.continual.runner import load_chain, run_sequence
    from adapter_hub.models.devices import resolve_device
    from adapter_hub.models.loading import load_base_model, load_tokenizer
    from adapter_hub.training import TrainConfig
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
    lora = LoraConfig(**_given(r=rank, alpha=alpha))
    training = TrainConfig(**_given(lr=lr, steps=steps, epochs=epochs, batch_size=batch_size, max_length=max_length,
                                    seed=seed))
    task = load_task(data, name=task_name, max_train=max_train, max_test=max_test, seed=training.seed)
    if any(t.name == task.name for t in history):
        raise click.UsageError(f"task {task.name!r} is already in this sequence; give the new task another --task name")
    config = ContinualConfig(lora, training)
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
        from adapter_hub.evaluation import EvalConfig, score
        from adapter_hub.lora import attach

        attach(model, last.state, name="scored")
        result_score = score(model, tokenizer, task, config=EvalConfig(max_length=training.max_length))["current"]
        reg.record_evaluation(ref, task=task.name, metric="accuracy", value=result_score.accuracy,
                              dataset=task.fingerprint(), scorer=result_score.scorer)
        click.echo(f"accuracy on {task.name} ({len(task.test)} test examples, {result_score.scorer}): "
                   f"{result_score.accuracy:.3f}", err=True)


def _given(**values):
    """The options given on the command line; the dataclass supplies every other default."""
    return {k: v for k, v in values.items() if v is not None}


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
