"""slimship: transfer a pretrained network, compress it, measure it, ship it.

Importing this package stays cheap (no torch): the public functions import their stage lazily.
"""

__version__ = "0.1.0"

from slimship.core.errors import SlimshipError  # noqa: E402

__all__ = ["SlimshipError", "__version__"]
