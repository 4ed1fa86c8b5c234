"""The Python API. ``run(recipe, out)`` wires the stages together; the functions on packages serve the CLI,
benchmarks and people who embed slimship. Imported lazily by ``slimship`` (no torch on import)."""

from slimship.api.packages import evaluate_package, inspect_package, load, predict
from slimship.api.run import run

__all__ = ["evaluate_package", "inspect_package", "load", "predict", "run"]
