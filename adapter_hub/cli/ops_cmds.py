"""Arithmetic commands: merge, compose, scale, reduce-rank. Each loads from the registry, computes, and
registers the result (printing its new reference) or writes a PEFT folder with --out.
Everything is checked before anything is registered."""

from __future__ import annotations

from pathlib import Path

import click

from adapter_hub.bench.report import fmt
from adapter_hub.cli.main import Context, cli, compute_options, pass_ctx
from adapter_hub.cli.output import table
from adapter_hub.data import load_tasks
from registry.folders import check_output_folder, output_folder
from registry.refs import check_name

# Kept in step with adapter_hub.ops.METHODS by a test; listed here so `--help` needs no torch import.
METHOD_NAMES = ["cat", "dare_linear", "dare_ties", "iso_c", "iso_cts", "knots_ties", "linear", "magnitude_prune",
                "task_arithmetic", "ties", "tsv"]


def _output_options(fn):
    fn = click.option("--note", help="A one-line note on the new version.")(fn)
    fn = click.option("--force", is_flag=True, help="Replace the content of a non-empty --out folder.")(fn)
    fn = click.option("--out", type=click.Path(path_type=Path), help="Write a PEFT folder here (instead of, or as "
                      "well as, registering with --task); new or empty unless --force.")(fn)
    fn = click.option("--task", help="Register the result as the next version of this task.")(fn)
    return fn


def _require_destination(task: str | None, out: Path | None, force: bool = False, optional: bool = False) -> None:
    """Both destinations checked before any adapter is loaded, computed or registered (optional: the
    result may go nowhere), so a bad --out never leaves a registered version behind."""
    if task is None and out is None and not optional:
        raise click.UsageError("say where the result goes: --task NAME (register it) and/or --out DIR")
    if task is not None:
        check_name(task)
    if out is not None:
        check_output_folder(out, force=force, option="--out")


def _deliver(ctx: Context, result, task: str | None, out: Path | None, note: str | None, force: bool = False
             ) -> str | None:
    """Register and/or write the result; its registry ref when registered."""
    ref = None
    if task is not None:
        ref = ctx.registry(create=True).register(result, task=task, note=note).ref
        click.echo(ref)
    if out is not None:
        output_folder(out, result.save, force=force, option="--out")
        click.echo(str(out))
    error = result.provenance.get("max_relative_error")
    if error is not None:
        click.echo(f"max relative error of the rank reduction: {error:.3g}", err=True)
    return ref


def _weights(text: str | None, n: int) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint="--weights")
    if len(values) != n:
        raise click.BadParameter(f"{n} adapters but {len(values)} weights", param_hint="--weights")
    return values


def _method_params(pairs: tuple[str, ...]) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--param")
        if name in out:
            raise click.BadParameter(f"{name} given twice", param_hint="--param")
        try:
            out[name] = float(text)
        except ValueError:
            out[name] = text  # a choice (the method checks it)
    return out


@cli.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("--method", default="linear", show_default=True, type=click.Choice(METHOD_NAMES),
              help="Merge method (see the README's table; each takes only its own options).")
@click.option("--weights", metavar="W1,W2,...", help="One weight per REF (default 1 each).")
@click.option("--density", type=float, help="Fraction of entries kept (ties, dare_*, magnitude_prune).")
@click.option("--lambda", "lam", type=float, help="Scale of the merged task vector (task_arithmetic, ties, dare_*, "
              "magnitude_prune).")
@click.option("--divisor", type=click.Choice(["count", "weights"]), help="TIES/DARE-TIES disjoint mean: by agreeing "
              "count (paper, PEFT; default) or by the agreeing weights' signed sum (mergekit).")
@click.option("--elect", type=click.Choice(["unweighted", "weighted"]), help="TIES/DARE-TIES sign election on the "
              "trimmed task vectors (paper, PEFT; default) or on the weighted ones (mergekit).")
@click.option("--param", "extra", multiple=True, metavar="NAME=VALUE", help="Another parameter of the method "
              "(repeatable), e.g. --param alpha=1.2 (iso_c, iso_cts, tsv), --param common_fraction=0.8 (iso_cts), "
              "--param keep=0.5 (tsv).")
@click.option("--seed", default=0, show_default=True, help="Seed for DARE's random masks.")
@click.option("--rank", type=int, help="Reduce the result to this rank (optimal, factored SVD).")
@click.option("--energy", type=float, help="Reduce each module to keep this fraction of squared norm.")
@click.option("--space", type=click.Choice(["dense", "core"]), default="dense", show_default=True,
              help="Where masked methods run: each module's dense ΔW, or the small Core Space (fast).")
@click.option("--allow-partial", is_flag=True, help="Adapters may target different modules (missing = zero).")
@click.option("--eval", "eval_specs", multiple=True, metavar="SPEC", help="Score the merge and its inputs on this "
              "task (repeatable; folder, builtin:NAME or hf:ID; the i-th REF is the i-th task's own adapter): "
              "accuracy and normalized accuracy (merged / own adapter).")
@click.option("--max-test", type=int, help="With --eval: at most this many test examples per task (seeded sample).")
@_output_options
@compute_options
@pass_ctx
def merge(ctx: Context, refs, method, weights, density, lam, divisor, elect, extra, seed, rank, energy, space,
          allow_partial, eval_specs, max_test, task, out, force, note) -> None:
    """Merge the adapters REF... with a published method and register the result.

    Each method takes only its own options (an option it does not take is an error).
    With --eval (one task per REF) the merge is also scored, and may go nowhere (no --task/--out).
    Example: adapter-hub merge agnews:3 yelp@best --method ties --density 0.3 --task merged"""
    _require_destination(task, out, force, optional=bool(eval_specs))
    from adapter_hub import ops

    options = dict(density=density, lam=lam, divisor=divisor, elect=elect, options=_method_params(extra))
    ops.method_params(method, **options)  # before anything is loaded
    reg = ctx.registry()
    adapters = [reg.load(ref) for ref in refs]
    tasks = None
    if eval_specs:  # data and pairing checked before the merge is computed or registered
        if len(eval_specs) != len(refs):
            raise click.UsageError(f"--eval: {len(refs)} adapters but {len(eval_specs)} tasks (the i-th REF is the "
                                   f"i-th task's own adapter)")
        tasks = load_tasks(list(eval_specs), max_test=max_test)
        if not reg.get(refs[0]).base_model:
            raise click.UsageError(f"--eval: {refs[0]} records no base model to score on")
    result = ops.merge(adapters, method, _weights(weights, len(refs)), **options,
                       seed=seed, rank=rank, energy=energy, space=space, allow_partial=allow_partial)
    ref = _deliver(ctx, result, task, out, note, force)
    if tasks is not None:
        _judge(reg, refs, adapters, result, tasks, ref)


def _judge(reg, refs, adapters, merged, tasks, ref: str | None) -> None:
    from adapter_hub.evaluation.merge_judge import MERGED, judge_merge
    from adapter_hub.models.loading import load_base_model, load_tokenizer

    base = reg.get(refs[0]).base_model
    judgement = judge_merge(load_base_model(base), load_tokenizer(base), tasks, merged, dict(zip(refs, adapters)))
    table(["task", "own adapter", "own", "merged", "normalized"],
          [[t, judgement.own[t], fmt(judgement.accuracy[judgement.own[t]][t]), fmt(judgement.accuracy[MERGED][t]),
            fmt(judgement.normalized[t])] for t in judgement.tasks],
          title=f"merge judged on {len(tasks)} tasks (normalized = merged / own; mean "
                f"{fmt(judgement.normalized_mean)})")
    if ref is not None:
        for t in tasks:
            reg.record_evaluation(ref, task=t.name, metric="accuracy", value=judgement.accuracy[MERGED][t.name],
                                  dataset=t.fingerprint(), scorer="loglik")


@cli.command()
@click.argument("expression")
@click.option("--rank", type=int, help="Reduce the result to this rank (optimal, factored SVD).")
@click.option("--energy", type=float, help="Reduce each module to keep this fraction of squared norm.")
@click.option("--allow-partial", is_flag=True, help="Adapters may target different modules (missing = zero).")
@_output_options
@compute_options
@pass_ctx
def compose(ctx: Context, expression, rank, energy, allow_partial, task, out, force, note) -> None:
    """Evaluate a linear EXPRESSION of adapters, e.g. "0.5*agnews:3 + 0.5*yelp@best - 0.2*toxic".

    Names may contain '-': write a space before a minus that subtracts (`a - b`).

    Example: adapter-hub compose "0.5*topic:1 + 0.5*sentiment - 0.2*topic@best" --rank 8 --task composed
    """
    _require_destination(task, out, force)
    from adapter_hub.ops.compose import compose as run_compose
    from adapter_hub.ops.compose import parse

    parse(expression)  # syntax errors before opening anything
    result = run_compose(expression, registry=ctx.registry(), rank=rank, energy=energy, allow_partial=allow_partial)
    _deliver(ctx, result, task, out, note, force)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("ref")
@click.argument("factor", type=float)
@_output_options
@compute_options
@pass_ctx
def scale(ctx: Context, ref, factor, task, out, force, note) -> None:
    """Multiply the adapter REF's ΔW by FACTOR (negative allowed: `scale a:1 -1` negates).

    Example: adapter-hub scale topic:1 -1 --task anti-topic
    """
    _require_destination(task, out, force)
    from adapter_hub import ops

    _deliver(ctx, ops.scale(ctx.registry().load(ref), factor), task, out, note, force)


@cli.command("reduce-rank")
@click.argument("ref")
@click.option("--rank", type=int, help="Keep this rank in every module.")
@click.option("--energy", type=float, help="Keep this fraction of each module's squared Frobenius norm.")
@click.option("--budget", type=int, help="Total parameter budget across modules (greedy, best value first).")
@_output_options
@compute_options
@pass_ctx
def reduce_rank(ctx: Context, ref, rank, energy, budget, task, out, force, note) -> None:
    """Compress the adapter REF to a lower rank: the optimal approximation, from its factors alone.

    Example: adapter-hub reduce-rank merged --energy 0.99 --task merged-small
    """
    _require_destination(task, out, force)
    from adapter_hub import ops

    _deliver(ctx, ops.reduce_rank(ctx.registry().load(ref), rank, energy=energy, budget=budget), task, out, note, force)
