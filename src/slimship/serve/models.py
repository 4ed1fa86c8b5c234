"""The packages a server serves: named, verified (hashes, and signatures when asked), loaded in the runtime each
records, and warmed up before the first request."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


from slimship.core.errors import SlimshipError
from slimship.serve.inputs import INPUT_KINDS, InputKind

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class ServedModel:
    """One served package. ``session`` runs a model input batch to logits (the package's own runtime)."""

    name: str
    path: str
    package: Any  # slimship.package.pack.LoadedPackage
    inputs: InputKind
    signed_by: str | None = None
    batcher: Any = field(default=None, repr=False)

    @property
    def session(self):
        return self.package.session

    def info(self) -> dict:
        """What ``GET /v1/models`` says about this model."""
        pkg = self.package
        model = pkg.manifest.get("model", {})
        return {
            "name": self.name,
            "package": Path(self.path).name,
            "package_sha256": pkg.package.package_sha256,
            "architecture": model.get("architecture"),
            "classes": list(pkg.class_names),
            "input": {"kind": pkg.preprocessing.kind, "field": self.inputs.json_field,
                      **pkg.preprocessing.to_dict()},
            "runtime": getattr(pkg, "runtime", model.get("runtime")),
            "runtime_by_batch": {str(b): rt for b, rt in pkg.runtimes_used().items()},
            "signed_by": self.signed_by,
            "accuracy": pkg.manifest.get("metrics", {}).get("accuracy"),
        }


def parse_model_specs(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``PATH`` or ``NAME=PATH`` → [(name, path)]; a bare path is named after its file (``runs/a/model.slim`` →
    ``model``). Raises SlimshipError on a bad or repeated name."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not _NAME.fullmatch(name):
            name, path = Path(spec).stem, spec
        if not _NAME.fullmatch(name):
            raise SlimshipError(f"{spec}: the file name cannot be a model name; serve it as NAME={spec} (letters, "
                                "digits, '.', '_', '-')")
        if name in {n for n, _ in out}:
            raise SlimshipError(f"two packages would be served as {name!r}: name them, e.g. a={path} b=OTHER.slim")
        out.append((name, path))
    if not out:
        raise SlimshipError("no package to serve: pass one or more .slim files")
    return out


def load_models(specs: Sequence[str], keys: Sequence[str] = (), require_signature: bool = False,
                log=print, runtime: str | None = None) -> list[ServedModel]:
    """Load and verify every package in ``specs`` (see :func:`parse_model_specs`) before anything is served.

    Every hash is checked. With ``keys`` (trusted public key files), a package that carries signatures must have a
    valid one by a trusted key (a tampered or forged one is refused); with ``require_signature`` an unsigned
    package is refused too. Raises PackageError / SlimshipError naming the package.
    """
    import slimship.data  # noqa: F401  registers the built-in preprocessing kinds a manifest names
    from slimship.core.runtime import side_by_side
    from slimship.package.pack import load_package
    from slimship.package.sign import check_signature, load_public_key, signatures

    if require_signature and not keys:
        raise SlimshipError("--require-signature needs the publisher's public key: add --key KEY.pub")
    trusted = [load_public_key(k) for k in keys]
    models = []
    for name, path in parse_model_specs(specs):
        pkg = load_package(path, runtime=runtime)  # runtime: every batch there (None: as the package records)
        signed_by = None
        if trusted and (require_signature or signatures(pkg.package)):
            signed_by = check_signature(pkg.package, trusted).key_id
        elif trusted:
            log(f"warning: {path} is not signed (pass --require-signature to refuse unsigned packages)")
        kind = pkg.preprocessing.kind
        if kind not in INPUT_KINDS:
            raise SlimshipError(f"{path}: `slimship serve` takes {', '.join(INPUT_KINDS.names())} inputs, not {kind!r} "
                                f"ones yet: classify with `slimship predict` or slimship.load(PKG).predict")
        model = ServedModel(name, str(path), pkg, INPUT_KINDS.get(kind), signed_by)
        with side_by_side():  # the server keeps every package's session for its whole life
            warm_up(model)
        models.append(model)
    return models


def warm_up(model: ServedModel) -> None:
    """Build the runtime session(s) and run a made-up input through preprocessing and the graph, so the first
    request pays for neither (and a graph a runtime cannot run fails at start-up, not on a client's request). A
    package that runs different batch sizes in different runtimes is warmed up at each batch size it records
    (at most :data:`WARM_UP_BATCH`), so every runtime a batch may go to is loaded."""
    import numpy as np

    pre, k = model.package.preprocessing, len(model.package.class_names)
    one = model.inputs.model_input(model.inputs.example(pre), pre)
    for b in sorted({min(b, WARM_UP_BATCH) for b in model.package.runtimes_used()}):
        out = model.session(np.repeat(one, b, axis=0))
        if out.shape != (b, k):
            raise SlimshipError(f"{model.path}: the graph gives outputs of shape {tuple(out.shape)} for {b} "
                                f"input(s), not ({b}, {k}): re-create the package")


WARM_UP_BATCH = 64
