"""What every compression method shares: the state passed between steps, the context a step works in, and the
method registry (dispatched on the config's type, as torchao does).

A method is one module (a folder when it grows) holding its config class and its handler, registered with
:func:`register_method`; :mod:`slimship.compress.methods` imports the built-in ones. A worked example is in
docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from slimship.core.device import CPU, Device
from slimship.core.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from slimship.core.preprocessing import Preprocessing
    from slimship.data.task import Examples
    from slimship.models.adapter import ModelAdapter


@dataclass
class ModelState:
    """A model between compression steps: a PyTorch module and/or a finished deploy graph."""

    model: Any = None  # torch.nn.Module
    onnx: bytes | None = None  # set by steps that produce the deploy graph (int8)
    arch_edits: dict = field(default_factory=dict)  # structural edits against the fresh architecture
    notes: dict = field(default_factory=dict)  # what each step did (reported, packaged)


@dataclass
class CompressContext:
    """Everything a step may use besides its config. Steps never see the test split."""

    adapter: ModelAdapter
    train: Examples
    val: Examples
    pre: Preprocessing
    teacher: nn.Module  # the dense transferred model (eval mode): the distillation teacher
    num_classes: int
    log: Callable[[str], None] = print
    progress: Any = None  # a core.progress.Reporter, or None
    seed: int = 0
    device: Device = CPU
    source: nn.Module | None = None  # the pretrained model before transfer (new head untrained): sparse transfer
    trainings: list = field(default_factory=list)  # every recovery run: {desc, epochs, steps, seconds}, in order

    def fresh_model(self) -> nn.Module:
        """The untouched architecture with random weights (the reference for structural edits)."""
        return self.adapter.build(self.num_classes, pretrained=False).model


Handler = Callable[[ModelState, Any, CompressContext], ModelState]
TRANSFORMER_OPS = "slimship.models.adapter:TransformerOps"  # ``requires`` of transformer surgery (by name: no torch)
IMAGE_MODEL = "slimship.models.adapter:ImageModel"  # ``requires`` of methods for image models only


@dataclass(frozen=True)
class Method:
    name: str
    config: type  # a pydantic model with a ``method: Literal[name]`` field
    handler: Handler
    terminal: bool = False  # produces the deploy graph; nothing may follow it
    requires: str | None = None  # "module:Protocol" the model adapter must implement (None: any model)

    def applies_to(self, adapter: Any) -> bool:
        """Whether this method can compress models of ``adapter``'s kind."""
        if self.requires is None:
            return True
        import importlib

        module, _, name = self.requires.partition(":")  # named, not imported, so registering stays torch-free
        return isinstance(adapter, getattr(importlib.import_module(module), name))


METHODS: Registry[Method] = Registry("compression method")
_BY_CONFIG: dict[type, Method] = {}


def register_method(config: type, *, terminal: bool = False, requires: str | None = None,
                    help: str = "") -> Callable[[Handler], Handler]:
    """Register ``handler(state, config, ctx) -> state`` for ``config``'s type; the method's name is the default
    of the config's ``method`` field (what recipes write). ``requires``: ``"module:Protocol"``, a runtime-checkable
    protocol the model adapter must implement (``"slimship.models.adapter:TransformerOps"``); searches leave the
    method out for other model kinds."""

    def deco(fn: Handler) -> Handler:
        name = config.model_fields["method"].default
        method = Method(name, config, fn, terminal, requires)
        METHODS.add(name, method, help=help)
        _BY_CONFIG[config] = method
        return fn

    return deco


def apply_step(state: ModelState, cfg: Any, ctx: CompressContext) -> ModelState:
    """Run one step: the handler registered for ``type(cfg)``."""
    return _BY_CONFIG[type(cfg)].handler(state, cfg, ctx)
