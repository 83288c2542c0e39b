"""The `adapter-hub` command line: one click group, thin over the Python API.

Registry commands import only `registry` (never torch), so `list`/`show` answer in a fraction of a
second; commands that need tensors import adapter_hub's torch modules inside their bodies.
Every expected failure prints one line, `error: ...`, and exits with status 1
(set ADAPTER_HUB_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import os
import sys

import click

from adapter_hub import __version__


class Context:
    """Shared state: the registry location, opened on first use."""

    def __init__(self, location: str | None, store: str | None) -> None:
        self.location = location
        self.store = store
        self._registry = None

    def registry(self, *, create: bool = True, check: bool = True):
        if self._registry is None:
            from registry.api import Registry

            self._registry = Registry.open(self.location, store=self.store, create=create, check=check)
        return self._registry


pass_ctx = click.make_pass_decorator(Context)


class Group(click.Group):
    """Turns the errors users can cause into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - filtered below
            if os.environ.get("ADAPTER_HUB_DEBUG") or not _expected(exc):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(f"error: {message}", err=True)
            sys.exit(1)


def _expected(exc: BaseException) -> bool:
    from registry.errors import AdapterHubError

    return isinstance(exc, (AdapterHubError, ValueError, KeyError, OSError, TypeError, RuntimeError))


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


# Command families live in their own modules; importing them registers their commands on `cli`.
from adapter_hub.cli import registry_cmds  # noqa: E402,F401
from adapter_hub.cli import ops_cmds  # noqa: E402,F401
from adapter_hub.cli import learn_cmds  # noqa: E402,F401
from adapter_hub.cli import bench_cmds  # noqa: E402,F401
