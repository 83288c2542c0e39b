"""Exception types users can catch. Messages say what was expected, what was found, what to do."""

from __future__ import annotations


from registry.errors import AdapterFormatError, AdapterHubError, NonFiniteError  # one hierarchy, torch-free

__all__ = ["AdapterHubError", "AdapterFormatError", "IncompatibleAdaptersError", "TargetModuleError",
           "NonFiniteError"]


class IncompatibleAdaptersError(AdapterHubError, ValueError):
    """Adapters (or an adapter and a model) do not fit together: base model, modules or shapes."""


class TargetModuleError(AdapterHubError, ValueError):
    """A target-module selector matched nothing, or matched a layer LoRA cannot wrap."""
