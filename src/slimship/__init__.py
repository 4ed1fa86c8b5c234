"""slimship: transfer a pretrained network, compress it, measure it, ship it.

Importing this package stays cheap (no torch): the public functions import their stage lazily.
"""

from slimship._version import __version__
from slimship.core.errors import SlimshipError

__all__ = ["SlimshipError", "__version__", "load"]


def load(path, *, base=None, runtime: str | None = None):
    """Read and verify a ``.slim`` package; ``load(PKG).session(batch)`` runs its graph in the runtime it was judged
    fastest in (ONNX Runtime when that one is not installed here, or ``runtime`` when given) and
    ``load(PKG).logits(images)`` prepares images as in training first. See
    :func:`slimship.package.pack.load_package`."""
    from slimship.package.pack import load_package

    return load_package(path, base=base, runtime=runtime)
