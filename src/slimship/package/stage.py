"""The package stage: every model a run made becomes one ``.slim`` file, written once.

:func:`prepare` turns a model into its deploy parts and the exact graph those parts decode to; the run measures
that graph; :func:`write` then writes the package with its figures. A model trained as a delta on the pretrained
model (``transfer.delta``, ``strategy: lora``) is also written as ``NAME.delta.slim`` against ``base.slim``: the pretrained backbone
without its classifier, so every task of the same architecture, weights and input size shares one
byte-identical base graph. Graphs of deltas keep BatchNorm unfolded, so a delta in a few weights stays a delta in
a few weights, and the task graph measured is the one rebuilt from the delta.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from slimship.package.deploy import DeployParts, deploy_parts

BASE_CARD = ("Pretrained backbone (classifier removed; outputs pooled features). Task packages are stored as "
             "deltas against it: `slimship push TASK.slim STORE --base NAME`.")


class Shippable(Protocol):
    """What the package stage needs of a trained or compressed model."""

    name: str
    kind: str
    model: Any
    onnx: bytes | None  # a finished deploy graph (int8), or None: exported here
    arch_edits: dict
    notes: dict
    compressed: bool
    base: Any  # the pretrained model this one is a delta against, or None


@dataclass
class Prepared:
    """A model ready to measure and write: ``graph`` is exactly what its package will decode to."""

    source: Shippable
    deploy: DeployParts
    graph: bytes
    delta: tuple[bytes, dict] | None = None  # (blob, info) against the run's base graph


@dataclass
class PackageContext:
    """What every package of a run shares."""

    adapter: Any  # the ModelAdapter
    folder: Path
    class_names: list[str]
    preprocessing: Any
    recipe: dict
    delta_value_bits: int = 8
    _base_graph: bytes | None = None

    def base_graph(self, pretrained) -> bytes:
        """The base graph of task deltas, written once as ``base.slim``."""
        if self._base_graph is None:
            from slimship.package.pack import pack

            self._base_graph = self.adapter.export_onnx(self.adapter.without_head(pretrained), fold_bn=False)
            pack(self.folder / "base.slim", onnx=self._base_graph, architecture=self.adapter.architecture,
                 class_names=[], preprocessing=self.preprocessing, recipe={"model": self.recipe["model"]},
                 card=BASE_CARD)
        return self._base_graph


def prepare(m: Shippable, ctx: PackageContext) -> Prepared:
    """The deploy parts of ``m`` and the graph they decode to.

    Compressed models without a deploy graph of their own keep BatchNorm unfolded, so shared/sparse weights stay
    exactly shared/sparse and are stored in the compact encoding (BatchNorm as a float16 affine)."""
    if m.base is not None:
        from slimship.package.delta import DeltaConfig, apply_delta, encode_delta

        base = ctx.base_graph(m.base)
        task = ctx.adapter.export_onnx(m.model, fold_bn=False)
        # how the transfer strategy's change is coded best (lora: lowrank), else every changed entry
        enc = m.notes.get("delta_encoding") or {"mode": "sparse", "density": 1.0, "value_bits": ctx.delta_value_bits}
        cfg = DeltaConfig(**enc, head_bits=32)
        blob, info = encode_delta(base, task, cfg)
        rebuilt = apply_delta(base, blob)
        return Prepared(m, deploy_parts(rebuilt), rebuilt, (blob, info))
    encode = m.compressed and m.onnx is None
    onnx = m.onnx
    if onnx is None:
        onnx = ctx.adapter.export_onnx(m.model, fold_bn=not encode)
        if encode:  # BN kept unfolded: store it as a float16 affine (2 numbers per channel, not 4)
            from slimship.models.onnx_fold import affine_batchnorms

            onnx = affine_batchnorms(onnx)
    deploy = deploy_parts(onnx, encode_weights=encode)
    return Prepared(m, deploy, deploy.graph() if encode else onnx)


def write(p: Prepared, ctx: PackageContext, metrics: dict) -> tuple[Path, int]:
    """Write ``NAME.slim`` with ``metrics`` in its manifest; returns (path, bytes on disk). The graph read back
    from the file is checked against the one measured."""
    from slimship.evaluate.runtime_choice import batch_size_of
    from slimship.package.pack import load_package, pack

    path = ctx.folder / f"{p.source.name}.slim"
    size = pack(path, deploy=p.deploy, architecture=ctx.adapter.architecture, class_names=ctx.class_names,
                preprocessing=ctx.preprocessing, recipe=ctx.recipe, metrics=metrics, arch_edits=p.source.arch_edits,
                runtime=metrics.get("runtime", "onnxruntime"),
                runtime_by_batch={batch_size_of(k): rt for k, rt in metrics.get("runtime_by_batch", {}).items()})
    if load_package(path).onnx != p.graph:
        raise RuntimeError(f"internal: the graph read back from {path} differs from the one measured")
    return path, size


def write_delta(p: Prepared, ctx: PackageContext, full_bytes: int) -> dict:
    """Write ``NAME.delta.slim`` beside ``base.slim`` (after :func:`write`); return what metrics record of it."""
    from slimship.package.delta import pack_delta

    blob, info = p.delta
    path = ctx.folder / f"{p.source.name}.delta.slim"
    info = {k: v for k, v in info.items() if k != "tensors"}
    size = pack_delta(path, base_package=ctx.folder / "base.slim", task_package=ctx.folder / f"{p.source.name}.slim",
                      blob=blob, info=info)
    return {"path": str(path), "bytes": size, "base_bytes": os.path.getsize(ctx.folder / "base.slim"),
            "full_bytes": full_bytes, "fraction_of_full": round(size / full_bytes, 4),
            "changed_fraction": info.get("changed_fraction"), "parts_xz_bytes": info.get("xz_bytes")}
