"""The one exception type a user can cause.

Anything raised as :class:`SlimshipError` is a mistake in the input (a recipe, a path, a package) and its
message says what to do about it. The CLI prints it on one line and exits non-zero; everything else is a bug
and keeps its traceback.
"""


class SlimshipError(Exception):
    """A user-facing error: the message is complete, actionable, and fits on one line."""


class RecipeError(SlimshipError):
    """The recipe does not validate."""


class DataError(SlimshipError):
    """A data source is missing, empty, unreadable or inconsistent."""


class ModelError(SlimshipError):
    """Unknown architecture, or weights that do not fit it."""


class PackageError(SlimshipError):
    """A .slim package is truncated, corrupted, tampered with, or from a newer format."""
