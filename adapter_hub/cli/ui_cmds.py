"""`adapter-hub ui`: serve the read-only web view of the registry (adapter_hub.ui)."""

from __future__ import annotations

import click

from adapter_hub.cli.main import Context, cli, pass_ctx

UI_EXTRA = "pip install 'adapter-hub[ui]'"


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. The default serves this machine only; 0.0.0.0 shares the (read-only, "
                   "unauthenticated) view with the network.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@pass_ctx
def ui(ctx: Context, host: str, port: int) -> None:
    """Browse the registry in a web browser: tasks, versions, lineage graphs, evaluations, benchmark
    runs with heatmaps and intervals, and the JSON API under /api/. Read-only.

    Example: adapter-hub ui --port 8080   (then open http://127.0.0.1:8080)
    """
    try:
        import uvicorn

        from adapter_hub.ui import create_app
    except ImportError as exc:
        raise click.ClickException(f"the web view needs {exc.name}: {UI_EXTRA}") from None
    registry = ctx.registry()
    where = "this machine only" if host in ("127.0.0.1", "localhost", "::1") else "the network (no authentication)"
    click.echo(f"serving {registry.location} read-only at http://{host}:{port} for {where}; Ctrl-C stops", err=True)
    try:
        uvicorn.run(create_app(registry), host=host, port=port, log_level="warning")
    finally:
        registry.close()
