"""Compression: each method is a config class (what users write in a recipe) plus a handler, in one module,
registered in :data:`METHODS` and dispatched on the config's type. Candidates in a recipe are chains of steps;
:mod:`slimship.compress.pipeline` runs them (with the stage cache, sharing common prefixes).
"""

from __future__ import annotations

from slimship.compress.base import METHODS, CompressContext, Method, ModelState, apply_step, register_method
from slimship.compress.methods import load_builtin_methods

__all__ = ["METHODS", "CompressContext", "Method", "ModelState", "apply_step", "register_method",
           "load_builtin_methods"]

load_builtin_methods()
