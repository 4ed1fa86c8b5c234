"""A package as an NVIDIA Triton model repository entry, for fleets that already run Triton.

``export_triton(PKG, DIR)`` writes::

    DIR/<name>/config.pbtxt     ONNX Runtime backend, inputs and outputs read from the graph, max batch size,
                                dynamic batching, CPU instances, the preprocessing in ``parameters``
    DIR/<name>/labels.txt       class names, one a line (Triton's classification extension reads it)
    DIR/<name>/1/model.onnx     the deploy graph, exactly what ``slimship export --onnx`` writes

The folder is assembled under a hidden temporary name in ``DIR`` and renamed into place, so a Triton server
polling the repository never loads half a model; an existing ``DIR/<name>`` is never overwritten.

The graph takes the normalised float input, so a Triton client must preprocess as slimship does: the parameters
``slimship.preprocessing`` (the package's JSON) and ``slimship.preprocessing.steps`` (the same in words) say how.
Needs onnx; never torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from slimship.core.atomic import temp_name, write_bytes_atomically
from slimship.core.errors import PackageError, SlimshipError
from slimship.package.deploy import deploy_graph
from slimship.package.format import read_package

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# ONNX TensorProto element type -> Triton DataType (model_config.proto)
_TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
                 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64",
                 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}
ACCELERATORS = ("auto", "none", "openvino")


@dataclass(frozen=True)
class TritonExport:
    """What :func:`export_triton` wrote: the model folder, its name, the batch size Triton may form (0: the graph
    has a fixed batch dimension, so no batching) and the CPU accelerator named in the config (None: plain ORT)."""

    path: str
    name: str
    max_batch_size: int
    accelerator: str | None


def export_triton(package: str | os.PathLike[str], repository: str | os.PathLike[str], *, name: str | None = None,
                  max_batch_size: int = 64, max_queue_delay_us: int = 2000, accelerator: str = "auto",
                  instances: int = 1) -> TritonExport:
    """Write ``package`` (a full package, verified first) as model ``name`` (default: the file's stem) into the
    Triton model repository ``repository`` (created if missing).

    ``accelerator``: ``openvino`` adds ORT's OpenVINO execution accelerator to the config, ``none`` leaves plain
    ONNX Runtime, ``auto`` picks OpenVINO when the package records it as its fastest runtime.
    Raises SlimshipError for a bad name, option or an existing model folder, PackageError for a damaged package
    or a graph Triton cannot describe.
    """
    name = Path(package).stem if name is None else name
    if not _NAME.fullmatch(name):
        raise SlimshipError(f"{name!r} cannot be a Triton model name: pass --triton-name NAME (letters, digits, "
                            "'.', '_', '-')")
    if accelerator not in ACCELERATORS:
        raise SlimshipError(f"unknown accelerator {accelerator!r}: use one of {', '.join(ACCELERATORS)}")
    if max_batch_size < 1 or max_queue_delay_us < 0 or instances < 1:
        raise SlimshipError("--triton-max-batch and instances must be at least 1, the queue delay at least 0")
    repo = Path(repository)
    target = repo / name
    if os.path.lexists(target):
        raise SlimshipError(f"{target} exists already: remove it, or export under another --triton-name")
    pkg = read_package(package, verify=True)
    from slimship.package.verify import check_package

    check_package(pkg)  # the manifest and graph as every reader checks them: a package verify refuses is not exported
    if "delta" in pkg.manifest:
        raise PackageError(f"{package} is a delta package: export the full task (`slimship pull` rebuilds it, or "
                           "pass --base)")
    graph = deploy_graph(pkg)
    inputs, outputs, batched = _signature(graph, str(package))
    if accelerator == "auto":
        accelerator = "openvino" if pkg.manifest.get("model", {}).get("runtime") == "openvino" else "none"
    names = pkg.manifest.get("model", {}).get("class_names") or []
    labels = all(isinstance(n, str) and "\n" not in n and "\r" not in n for n in names) and len(names) > 0
    config = model_config(name, inputs, outputs, max_batch_size if batched else 0, max_queue_delay_us,
                          accelerator if accelerator != "none" else None, instances, _parameters(pkg),
                          "labels.txt" if labels else None)
    files = {"config.pbtxt": config.encode("utf-8"), "1/model.onnx": graph}
    if labels:
        files["labels.txt"] = "".join(f"{n}\n" for n in names).encode("utf-8")
    _write_folder(target, files)
    return TritonExport(str(target), name, max_batch_size if batched else 0,
                        accelerator if accelerator != "none" else None)


def model_config(name: str, inputs: list[tuple[str, str, list[int]]], outputs: list[tuple[str, str, list[int]]],
                 max_batch_size: int, max_queue_delay_us: int, accelerator: str | None, instances: int,
                 parameters: dict[str, str], label_file: str | None) -> str:
    """The config.pbtxt text (protobuf text format of Triton's ``inference.ModelConfig``)."""
    lines = [f"name: {_q(name)}", 'backend: "onnxruntime"', f"max_batch_size: {max_batch_size}"]
    for key, tensors in (("input", inputs), ("output", outputs)):
        lines.append(f"{key} [")
        for i, (tname, dtype, dims) in enumerate(tensors):
            label = f"\n    label_filename: {_q(label_file)}" if key == "output" and label_file and i == 0 else ""
            lines.append(f"  {{\n    name: {_q(tname)}\n    data_type: {dtype}\n    dims: [ {', '.join(map(str, dims))} ]"
                         f"{label}\n  }}{',' if i < len(tensors) - 1 else ''}")
        lines.append("]")
    if max_batch_size > 0:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}")
    lines.append(f"instance_group [\n  {{\n    kind: KIND_CPU\n    count: {instances}\n  }}\n]")
    if accelerator:
        lines.append("optimization {\n  execution_accelerators {\n    cpu_execution_accelerator [\n"
                     f"      {{ name: {_q(accelerator)} }}\n    ]\n  }}\n}}")
    for key, value in parameters.items():
        lines.append(f"parameters {{\n  key: {_q(key)}\n  value {{ string_value: {_q(value)} }}\n}}")
    return "\n".join(lines) + "\n"


def _signature(graph: bytes, source: str) -> tuple[list, list, bool]:
    """(inputs, outputs, batched): each tensor as (name, Triton type, dims without the batch dimension when
    batched); batched when every input and output has a dynamic first dimension."""
    import onnx

    try:
        model = onnx.load_from_string(graph)
    except Exception as e:  # protobuf's DecodeError and friends share no useful base class
        raise PackageError(f"{source}: the deploy graph is not valid ONNX ({type(e).__name__}): re-create the package") from None
    initializers = {i.name for i in model.graph.initializer}
    ins = [v for v in model.graph.input if v.name not in initializers]
    tensors = []
    for v in [*ins, *model.graph.output]:
        t = v.type.tensor_type
        if not v.type.HasField("tensor_type") or t.elem_type not in _TRITON_TYPES:
            raise PackageError(f"{source}: graph tensor {v.name!r} has a type Triton cannot take: export --onnx only")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        tensors.append((v.name, _TRITON_TYPES[t.elem_type], dims))
    batched = all(dims and dims[0] == -1 for _, _, dims in tensors)
    if batched:
        tensors = [(n, dt, dims[1:]) for n, dt, dims in tensors]
    return tensors[: len(ins)], tensors[len(ins):], batched


def _parameters(pkg) -> dict[str, str]:
    """What a client needs to reproduce the input, plus where the model came from."""
    m = pkg.manifest
    pre = m.get("preprocessing", {})
    out = {"slimship.preprocessing": json.dumps(pre, sort_keys=True),
           "slimship.classes": json.dumps(m.get("model", {}).get("class_names", []), ensure_ascii=False)}
    if pre.get("kind", "image") == "image":
        out["slimship.preprocessing.steps"] = image_steps(pre)
    out["slimship.package_sha256"] = pkg.package_sha256
    out["slimship.version"] = str(m.get("slimship_version", ""))
    return out


def image_steps(pre: dict) -> str:
    """The image preprocessing of a package, in words precise enough to reimplement it."""
    size, channels = pre.get("image_size"), pre.get("channels")
    gray = ("convert to 8-bit gray (Pillow 'L': 1-bit/16-bit/float gray scaled to 0-255; colour as "
            "(19595 R + 38470 G + 7471 B + 32768) >> 16)") if channels == 1 else "convert to 8-bit RGB (alpha dropped)"
    repeat = " repeat the gray channel 3 times;" if channels == 1 and pre.get("model_channels", 3) == 3 else ""
    resize = (f"resize to {size}x{size} with bilinear interpolation, half-pixel centres, no antialiasing "
              f"(torch.nn.functional.interpolate(mode='bilinear', align_corners=False)), rounded to uint8")
    if pre.get("interpolation", "bilinear") == "bilinear-antialias":
        resize += (f"; but an image more than twice {size} px on either side is resized with Pillow's antialiased "
                   f"bilinear filter instead (Image.resize(({size}, {size}), Image.BILINEAR))")
    return (f"decode the image (first frame); {gray}; {resize}; scale to [0, 1] (x / 255);{repeat} subtract mean "
            f"{pre.get('mean')} and divide by std {pre.get('std')} per channel; float32, layout NCHW "
            "(batch, channel, height, width)")


def _write_folder(target: Path, files: dict[str, bytes]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(temp_name(target.name))
    try:
        for rel, data in files.items():
            write_bytes_atomically(tmp / rel, data)
        try:
            os.rename(tmp, target)  # a whole folder appears at once; fails rather than replace one that exists
        except OSError as e:
            raise SlimshipError(f"cannot create {target} ({e.strerror or e}): it appeared meanwhile, or the folder "
                                "is not writable") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _q(text: str) -> str:
    """A protobuf text-format string literal (UTF-8; quotes, backslashes and control characters escaped)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
