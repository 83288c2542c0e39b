"""adapter-hub's registry: persistence only (SQLite/PostgreSQL + a blob store); never imports torch.

Attributes load lazily so that importing `registry.errors` (which adapter_hub does) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Registry": "registry.api",
    "VersionInfo": "registry.queries",
    "MetricFilter": "registry.queries",
    "default_location": "registry.api",
    "parse_ref": "registry.refs",
    "check_name": "registry.refs",
    "RegistryError": "registry.errors",
    "RefError": "registry.errors",
    "IntegrityError": "registry.errors",
    "DuplicateVersionError": "registry.errors",
    "SchemaError": "registry.errors",
    "AdapterFormatError": "registry.errors",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from registry.api import Registry, default_location
    from registry.errors import (
        AdapterFormatError,
        DuplicateVersionError,
        IntegrityError,
        RefError,
        RegistryError,
        SchemaError,
    )
    from registry.queries import MetricFilter, VersionInfo
    from registry.refs import check_name, parse_ref


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
