"""Exception types users can catch. Messages say what was expected, what was found, what to do."""

from __future__ import annotations


class AdapterHubError(Exception):
    """Base class of every error adapter-hub raises on purpose."""


class AdapterFormatError(AdapterHubError, ValueError):
    """An adapter folder or file is malformed, truncated, unsafe or inconsistent."""


class IncompatibleAdaptersError(AdapterHubError, ValueError):
    """Adapters (or an adapter and a model) do not fit together: base model, modules or shapes."""


class TargetModuleError(AdapterHubError, ValueError):
    """A target-module selector matched nothing, or matched a layer LoRA cannot wrap."""


class NonFiniteError(AdapterHubError, ValueError):
    """A tensor or the result of an operation contains NaN or inf."""
