"""Compression methods: each is a config class (what users write in a recipe) plus a private handler.

A handler takes a :class:`ModelState` and returns the next one; candidates in a recipe are chains of steps.
Register a method with :func:`register_method`; ``slimship list`` shows :data:`METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from slimship.compress.int8 import Int8Config
from slimship.compress.prune_channels import PruneChannelsConfig
from slimship.registry import Registry


@dataclass
class ModelState:
    """A model between compression steps: a PyTorch module and/or a finished deploy graph."""

    model: Any = None  # torch.nn.Module, or None once only the deploy graph exists
    onnx: bytes | None = None  # set by steps that produce the deploy graph (int8)
    arch_edits: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    config: type
    handler: Callable[..., ModelState]
    terminal: bool = False  # produces the deploy graph; nothing may follow it


METHODS: Registry[Method] = Registry("compression method")


def register_method(name: str, config: type, terminal: bool = False, help: str = ""):
    def deco(fn):
        METHODS.add(name, Method(config, fn, terminal), help=help)
        return fn

    return deco


from slimship.compress import handlers as _handlers  # noqa: E402,F401  (registers the built-in methods)

__all__ = ["METHODS", "ModelState", "Method", "register_method", "Int8Config", "PruneChannelsConfig"]
