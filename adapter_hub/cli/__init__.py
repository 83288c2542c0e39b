"""The `adapter-hub` command line: one click group (main.py), thin over the Python API, its commands
in one module per family. Importing this package registers every command on `cli`.

Registry commands import only `registry` (never torch), so `list`/`show` answer in a fraction of a
second; commands that need tensors import adapter_hub's torch modules inside their bodies.
"""

from adapter_hub.cli import bench_cmds, learn_cmds, ops_cmds, registry_cmds, ui_cmds  # noqa: F401  (register commands)
from adapter_hub.cli.main import (
    Context,
    cli,
    compute_options,
    error_line,
    main,
    pass_ctx,
)

__all__ = ["Context", "cli", "compute_options", "error_line", "main", "pass_ctx"]
