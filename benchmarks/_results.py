"""What every benchmark does at the end: print its measurements one per line, and save them as JSON."""

from __future__ import annotations

import json


def emit(results: dict, json_path: str | None, *, width: int = 28, spec: str = ".4g") -> None:
    """Print `key value` lines (floats formatted with `spec`); write the dict to json_path when given."""
    for key, value in results.items():
        print(f"{key:{width}s} {value:{spec}}" if isinstance(value, float) else f"{key:{width}s} {value}")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(results, fh, indent=2)
