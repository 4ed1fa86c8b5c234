"""``python -m slimship``: the command line, also as torchrun's module (``torchrun ... -m slimship run ...``)."""

import os
import sys

from slimship.cli.main import main

if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
