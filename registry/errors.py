"""Registry errors: each says what was expected, what was found, and what to do."""

from __future__ import annotations


class AdapterHubError(Exception):
    """Base class of every error adapter-hub raises on purpose (registry and tensor side alike)."""


class RegistryError(AdapterHubError):
    """Base class of every error the registry raises on purpose."""


class RefError(RegistryError, ValueError):
    """A reference is malformed, or names nothing (or more than one thing) in the registry."""


class NameError_(RegistryError, ValueError):
    """A task, alias or tag name breaks the naming rules."""


class IntegrityError(RegistryError):
    """Stored bytes no longer match their recorded sha256 (or are missing)."""


class DuplicateVersionError(RegistryError):
    """The same content is already a live version of this task."""


class SchemaError(RegistryError):
    """The database schema is not the one this adapter-hub expects (out of date, or newer)."""


class AdapterFormatError(AdapterHubError, ValueError):
    """An adapter folder or file is malformed, truncated, unsafe or inconsistent."""


class NonFiniteError(AdapterHubError, ValueError):
    """A tensor (in a file, or the result of an operation) contains NaN or inf."""
