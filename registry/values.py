"""What callers may store: JSON objects (metadata, run configs and results) without NaN or infinities,
and tags whose keys follow the naming rules. Checked before anything is written."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from registry.refs import check_name

MAX_TAG_VALUE = 1024  # characters: a tag is a label, not a document (metadata is for those)


def json_object(value: Any, what: str) -> dict[str, Any]:
    """A JSON round-trip of a mapping (None: {}); ValueError naming `what` for anything else."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False, default=_reject))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable without NaN/inf: {exc}")


def _reject(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def check_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    out = {}
    for key, value in (tags or {}).items():
        check_name(key, "tag key")
        text = str(value)
        if len(text) > MAX_TAG_VALUE:
            raise ValueError(f"tag {key!r}: value is {len(text)} characters (at most {MAX_TAG_VALUE})")
        out[key] = text
    return out
