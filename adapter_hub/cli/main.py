"""The `adapter-hub` click group and what every command shares: the registry context, the compute
options, and one-line errors. The commands live in the *_cmds modules (adapter_hub.cli imports them).

Registry commands import only `registry` (never torch), so `list`/`show` answer in a fraction of a
second; commands that need tensors import adapter_hub's torch modules inside their bodies.
Every failure prints one line, `error: ...`, and exits with status 1 (with `--json`, a JSON object
`{"error": ..., "type": ...}` on stdout too); set ADAPTER_HUB_DEBUG=1 for the traceback.
Only commands that add content create a registry; the others refuse a path that holds none.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from adapter_hub import __version__
from adapter_hub.core import progress
from registry.api import Registry
from registry.errors import AdapterHubError


class Context:
    """Shared state: the registry location, opened on first use."""

    def __init__(self, location: str | None, store: str | None) -> None:
        self.location = location
        self.store = store
        self._registry = None

    def registry(self, *, create: bool = False, check: bool = True):
        if self._registry is None:
            self._registry = Registry.open(self.location, store=self.store, create=create, check=check)
        return self._registry


pass_ctx = click.make_pass_decorator(Context)


def compute_options(fn):
    """`--threads N` for the commands that run tensors (torch.set_num_threads; default: torch's choice,
    usually one per core; times in the README say which they were measured with) and `--quiet`
    (adapter_hub.core.progress: bars on a terminal, one line per phase elsewhere, nothing when quiet)."""
    @functools.wraps(fn)
    def wrapper(*args, threads: int | None = None, quiet: bool = False, **kwargs):
        progress.set_mode("quiet" if quiet else "auto")
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        return fn(*args, **kwargs)

    wrapper = click.option("--quiet", "-q", is_flag=True, help="No progress: neither bars (on a terminal) nor the "
                           "one-line-per-phase log (elsewhere); results are still printed.")(wrapper)
    return click.option("--threads", type=click.IntRange(min=1), envvar="ADAPTER_HUB_THREADS", metavar="N",
                        help="CPU threads for tensor work (torch.set_num_threads); env ADAPTER_HUB_THREADS.")(wrapper)


class Group(click.Group):
    """Turns every error into one line on stderr and exit status 1 (never a traceback)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["adapter_hub.json"] = "--json" in args  # how errors are printed, known before any runs
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - every error ends here, described
            if os.environ.get("ADAPTER_HUB_DEBUG"):
                raise
            message = error_line(exc)
            if ctx.meta.get("adapter_hub.json"):
                import json

                click.echo(json.dumps({"error": message, "type": type(exc).__name__}))
            click.echo(f"error: {message}", err=True)
            sys.exit(1)


def error_line(exc: BaseException) -> str:
    """One line naming the problem: the error's own message for the ones we raise on purpose (and the
    usual OS/value errors), the exception type too for anything unexpected."""
    text = str(exc).strip()
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    first = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, (AdapterHubError, ValueError, KeyError, OSError, TypeError)):
        return first
    return f"unexpected {type(exc).__name__}: {first} (set ADAPTER_HUB_DEBUG=1 for the traceback)"


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="adapter-hub")
@click.option("--registry", "location", envvar="ADAPTER_HUB_REGISTRY", metavar="PATH|URL",
              help="Registry folder (SQLite inside) or database URL (postgresql+psycopg://...). "
                   "Default: $ADAPTER_HUB_HOME or the user data dir.")
@click.option("--store", envvar="ADAPTER_HUB_STORE", metavar="DIR|URL",
              help="Blob store for a database-URL registry (a folder, s3://..., gs://...); remembered after init.")
@click.pass_context
def cli(ctx: click.Context, location: str | None, store: str | None) -> None:
    """Continual learning with LoRA adapters: registry, arithmetic, training, forgetting evaluation."""
    ctx.obj = Context(location, store)


def main() -> None:
    cli(prog_name="adapter-hub")
