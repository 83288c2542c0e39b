"""The error hierarchy: every error adapter-hub raises on purpose is an AdapterHubError, so one
`except AdapterHubError` catches them all; each also subclasses the builtin it refines (ValueError,
KeyError, RuntimeError), so code written against the builtin keeps working. Messages say what was
expected, what was found, and what to do. The base class lives in registry.errors, which is
torch-free and below this package, so the registry's errors and these are one hierarchy.
"""

from __future__ import annotations

from registry.errors import AdapterFormatError, AdapterHubError, NonFiniteError

__all__ = ["AdapterHubError", "AdapterFormatError", "NonFiniteError", "IncompatibleAdaptersError",
           "TargetModuleError", "AdapterNotAttachedError", "AdapterStateError", "UnavailableDeviceError", "DataError",
           "ComposeSyntaxError"]


class IncompatibleAdaptersError(AdapterHubError, ValueError):
    """Adapters (or an adapter and a model) do not fit together: base model, modules or shapes."""


class TargetModuleError(AdapterHubError, ValueError):
    """A target-module selector matched nothing, or matched a layer LoRA cannot wrap."""


class AdapterNotAttachedError(AdapterHubError, KeyError):
    """No adapter of that name is attached to the model."""

    def __str__(self) -> str:  # KeyError would print the message quoted, as a key
        return str(self.args[0]) if self.args else ""


class AdapterStateError(AdapterHubError, RuntimeError):
    """The operation conflicts with what the model's adapters are doing (merged into the weights,
    already merged, or routed per row)."""


class UnavailableDeviceError(AdapterHubError, RuntimeError):
    """A device was asked for that this machine does not have (say cuda without a GPU)."""


class DataError(AdapterHubError, ValueError):
    """A task's files or examples are unusable; the message names the file and the problem."""


class ComposeSyntaxError(AdapterHubError, ValueError):
    """A compose expression cannot be parsed or is not linear; the message shows the column."""

    def __init__(self, expression: str, column: int, message: str) -> None:
        self.expression, self.column = expression, column
        pointer = " " * (column - 1) + "^"
        super().__init__(f"column {column}: {message}\n  {expression}\n  {pointer}")
