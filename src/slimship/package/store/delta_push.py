"""``slimship push TASK STORE --base BASE``: store a task package as a delta against a base package that is
already in the store, after checking in ONNX Runtime that the delta rebuilds the task."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

from slimship.core.errors import PackageError
from slimship.package.store.refs import _NAME

DELTA_MODES = ("fp16", "lossless", "lowrank")
CHECK_INPUTS = 8  # deterministic random images the rebuilt graph is compared with the task's on
CHECK_SEED = 0


def delta_config(mode: str = "fp16"):
    """The :class:`~slimship.package.delta.DeltaConfig` of a push mode. Both keep every changed entry
    (unchanged entries cost nothing; tensors without a base counterpart, such as a new head, stay whole in
    fp32): ``fp16`` stores the deltas as fp16, ``lossless`` the exact differences of the fp32 bit patterns,
    which rebuilds the task byte for byte; ``lowrank`` codes each changed matrix as a truncated SVD with fp16
    factors (exact for a task trained with LoRA; any other matrix whose factors would not be smaller, and every
    vector, goes as fp16 deltas)."""
    from slimship.package.delta import DeltaConfig

    if mode not in DELTA_MODES:
        raise PackageError(f"unknown delta mode {mode!r}: use one of {', '.join(DELTA_MODES)}")
    if mode == "lowrank":
        return DeltaConfig(mode="lowrank", value_bits=16, head_bits=32)
    return DeltaConfig(mode="sparse", density=1.0, value_bits=16 if mode == "fp16" else 32, head_bits=32)


def push_delta(store: Any, package: str | os.PathLike[str], base: str | os.PathLike[str], *,
               name: str | None = None, version: str | None = None, mode: str = "fp16"):
    """Push the task package ``package`` to ``store`` as a delta against ``base``; returns a PushResult.

    ``base`` is ``NAME[@VERSION|@sha256:HEX]`` of a full package in the store, or the path of a local
    ``.slim`` that is in the store (the same SHA-256). The task's graph is encoded with
    :func:`delta_config` ``(mode)``, rebuilt, and both graphs are run in ONNX Runtime on
    :data:`CHECK_INPUTS` deterministic random images of the task's input shape; the largest
    ``|logit difference|``, the top-1 agreement, whether the rebuilt graph is bit-exact, and the task
    package's size (``full_bytes``) go into the delta package's ``delta.info``. If the delta package is
    not smaller than the task package, the task package is pushed whole instead (``note`` says so).
    ``name`` defaults to the task file's name without ``.slim``.

    Raises PackageError if the base is not in the store (push it first), either package is not a full
    package, or the rebuilt graph does not agree with the task's on every check input's top-1 class.
    """
    from slimship.package.delta import apply_delta, encode_delta, pack_delta
    from slimship.package.delta.package import _base_graph
    from slimship.package.deploy import deploy_graph
    from slimship.package.format import read_package

    if name is None:
        name = Path(package).stem
        if not _NAME.fullmatch(name):
            raise PackageError(f"the file name {name!r} cannot be a package name: pass --name NAME")
    task = read_package(package)
    if "delta" in task.manifest:
        raise PackageError(f"{package} is already a delta package: push it without --base")
    task_onnx = deploy_graph(task)
    with tempfile.TemporaryDirectory(prefix="slimship-push-") as tmp:
        base_path, base_id = _base_file(store, base, Path(tmp) / "base.slim")
        base_onnx = _base_graph(read_package(base_path), base)
        try:
            blob, info = encode_delta(base_onnx, task_onnx, delta_config(mode))
        except ValueError as e:
            raise PackageError(f"{package} cannot be encoded against {base} ({e}): push it without --base") from None
        check = check_rebuilt(task_onnx, apply_delta(base_onnx, blob), task.manifest, package)
        if check["top1_agreement"] < 1.0:
            hint = "push with --delta lossless" if mode != "lossless" else "push it without --base"
            raise PackageError(
                f"the {mode} delta of {package} changes the top-1 class on {check['top1_disagreements']} of "
                f"{check['inputs']} check inputs (max |logit difference| {check['max_abs_logit_diff']:.3g}): {hint}")
        info.update(preset=mode, full_bytes=task.size_bytes, check=check)
        delta_path = Path(tmp) / "task.delta.slim"
        size = pack_delta(delta_path, base_package=base_path, task_package=package, blob=blob, info=info)
        if size >= task.size_bytes:
            r = store.push(package, name=name, version=version)
            return dataclasses.replace(r, full_bytes=task.size_bytes, note=(
                f"the delta package ({size:,} bytes) is not smaller than the task package, so the full package "
                f"was stored"))
        r = store.push(delta_path, name=name, version=version, base=base_id)
    return dataclasses.replace(r, full_bytes=task.size_bytes, check=check)


def check_rebuilt(task_onnx: bytes, rebuilt_onnx: bytes, manifest: dict, source: Any = "the package") -> dict:
    """Compare a rebuilt graph with the task's in ONNX Runtime (one thread, so the figures are
    reproducible) on :data:`CHECK_INPUTS` random uint8 images (seed :data:`CHECK_SEED`) at the size and
    channels of ``manifest["preprocessing"]``, normalised as the package prescribes. Returns a JSON-ready
    dict: ``inputs``, ``seed``, ``max_abs_logit_diff``, ``top1_agreement``, ``top1_disagreements``,
    ``bit_exact`` (the graphs are the same bytes)."""
    import numpy as np

    from slimship.core.preprocessing import preprocessing_from_dict
    from slimship.core.runtime import ort_logits, ort_session

    try:
        pre = preprocessing_from_dict(manifest["preprocessing"])
    except (KeyError, TypeError, ValueError) as e:
        raise PackageError(f"{source}: the manifest lacks valid preprocessing ({e}); re-create the package") from None
    rng = np.random.default_rng(CHECK_SEED)
    x = pre.model_input_np(pre.random_rows(CHECK_INPUTS, rng))
    try:
        want = ort_logits(ort_session(task_onnx, threads=1), x)
        got = ort_logits(ort_session(rebuilt_onnx, threads=1), x)
    except Exception as e:  # onnxruntime raises its own exception types, with no common base to name
        raise PackageError(f"{source}: the task graph does not run in ONNX Runtime on inputs of its "
                           f"preprocessing ({type(e).__name__}): check the package with `slimship eval`") from None
    want, got = want.reshape(len(x), -1), got.reshape(len(x), -1)
    agree = want.argmax(1) == got.argmax(1)
    return {"inputs": CHECK_INPUTS, "seed": CHECK_SEED,
            "max_abs_logit_diff": float(f"{float(np.abs(want - got).max(initial=0.0)):.6g}"),
            "top1_agreement": float(agree.mean()), "top1_disagreements": int((~agree).sum()),
            "bit_exact": rebuilt_onnx == task_onnx}


def _base_file(store: Any, base: str | os.PathLike[str], fetch_to: Path) -> tuple[Path, str]:
    """(a local file holding the base package, its id in the store). A path is used as it is once the store
    is found to hold it; a reference is pulled (verified) to ``fetch_to``."""
    from slimship.package.format import sha256_file

    text = os.fspath(base)
    if Path(text).is_file() or text.endswith(".slim") or os.sep in text or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise PackageError(f"the base {text} does not exist: give NAME[@VERSION] of a package in the store, "
                               f"or the path of a .slim file that was pushed there")
        base_id = sha256_file(path)
        if not store.has_package(base_id):
            raise PackageError(f"the base {text} is not in store {store.url}: push the base first "
                               f"(slimship push {text} {store.url})")
        return path, base_id
    if not store.exists():
        raise PackageError(f"the base {text!r} is not in store {store.url} (it holds nothing yet): push the base "
                           f"first (slimship push BASE.slim {store.url})")
    name, _, base_id = store.resolve(text)
    store.pull(f"{name}@sha256:{base_id}", fetch_to, raw=True)
    return fetch_to, base_id
