"""Learning commands: demo (and, as they land, train / eval / bench). They import torch lazily."""

from __future__ import annotations

import click

from adapter_hub.cli import cli


@cli.command()
@click.option("--base-model", default="smollm2-135m", show_default=True, help="Base model name or folder.")
@click.option("--task", default="topic", show_default=True, help="Built-in task to learn.")
@click.option("--steps", default=40, show_default=True, help="Training steps.")
@click.option("--out", default="demo-out", show_default=True, help="Folder for the saved adapter.")
def demo(base_model: str, task: str, steps: int, out: str) -> None:
    """Train a LoRA on a built-in task and show the answers before and after (offline, CPU)."""
    from adapter_hub.demo import DemoConfig, run_demo

    run_demo(DemoConfig(base_model=base_model, task=task, steps=steps, out=out), echo=click.echo)
