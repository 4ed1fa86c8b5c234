"""slimship: transfer a pretrained network, compress it, measure it, ship it.

Importing this package stays cheap (no torch): the public functions below are looked up in
:mod:`slimship.api` on first use, and import their stage only when called.

    import slimship
    slimship.predict("model.slim", ["photo.png"])   # -> [{"image": "photo.png", "top": [...]}]
"""

from slimship._version import __version__
from slimship.core.errors import SlimshipError

# Public name -> the module that defines it; resolved by __getattr__ so that `import slimship` imports none of them.
_LAZY = {
    "run": "slimship.api",
    "load": "slimship.api",
    "evaluate_package": "slimship.api",
    "predict": "slimship.api",
    "inspect_package": "slimship.api",
}

__all__ = ["SlimshipError", "__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'slimship' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
