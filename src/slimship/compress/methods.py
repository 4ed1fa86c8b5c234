"""The built-in compression methods, registered explicitly (one import per method module).

A new method is a new module with its config class and handler (see docs/architecture.md) plus one line here;
a plug-in outside slimship calls :func:`slimship.compress.register_method` itself.
"""

from __future__ import annotations

_loaded = False


def load_builtin_methods() -> None:
    """Import (and so register) every built-in method; cheap (no torch) and idempotent."""
    global _loaded
    if _loaded:
        return
    from slimship.compress import int8, kmeans, lowrank, prune_channels, unstructured, weight_only  # noqa: F401
    from slimship.compress import drop_blocks, downscale  # noqa: F401  (CNNs: fewer blocks, lower resolution)
    from slimship.compress import drop_layers, prune_transformer  # noqa: F401  (transformers: docs/text.md)

    _loaded = True
