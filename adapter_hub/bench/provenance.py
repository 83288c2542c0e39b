"""Which code produced a result: stored with every cell, so a run resumed over several sessions shows
which code made which cells."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import adapter_hub


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """adapter-hub's version, with the git commit (and "-dirty") when it runs from a checkout. Stored
    with every cell: a run resumed over several sessions shows which code produced which cells."""
    here = Path(adapter_hub.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return adapter_hub.__version__
    return f"{adapter_hub.__version__}+g{commit}{'-dirty' if dirty else ''}"
