"""The stage cache: every stage's result under ``OUT/.work``, keyed by the hash of what produced it.

An interrupted run resumes where it stopped, and a re-run with a changed compression plan does not redo the
transfer. An entry is a JSON file (written last: it is the commit) plus, optionally, the model's weights as
safetensors and a deploy graph as ONNX bytes. Rebuilding a module of the right shape is the caller's job (it
knows the architecture and its structural edits); the cache only stores and returns tensors.

In a distributed run (:class:`~slimship.core.distributed.World`) only rank 0 touches the folder: it reads an
entry and sends its bytes to the others (their machines need no copy of OUT), and it alone writes, with every
process meeting at a barrier once the entry is committed. Every process must call ``load`` and ``save`` alike.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from slimship.core.atomic import write_atomically, write_bytes_atomically, write_text_atomically
from slimship.core.distributed import SINGLE, World


def stage_key(*parts) -> str:
    """A short, stable hash of JSON-able ``parts`` (recipe sections, parent keys, data fingerprints)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class CacheEntry:
    info: dict
    onnx: bytes | None
    _weights: Path | bytes | None  # the safetensors file, or its bytes (received from rank 0)

    def state_dict(self) -> dict:
        """The stored weights (tensors only, through safetensors); empty when none were stored."""
        if self._weights is None:
            return {}
        if isinstance(self._weights, bytes):
            from safetensors.torch import load

            return load(self._weights)
        from safetensors.torch import load_file

        return load_file(str(self._weights))


class StageCache:
    """Stage results under a folder: ``KEY.json`` (+ ``KEY.safetensors``, ``KEY.onnx``)."""

    def __init__(self, root: Path, world: World = SINGLE):
        self.root = Path(root)
        self.world = world
        if world.main:
            self.root.mkdir(parents=True, exist_ok=True)

    def load(self, key: str) -> CacheEntry | None:
        if not self.world.distributed:
            return self._read(key)
        entry = self._read(key) if self.world.main else None
        if entry is not None and isinstance(entry._weights, Path):
            entry._weights = entry._weights.read_bytes()
        w = self.world
        info = w.broadcast_json(entry.info if entry is not None else None)
        if info is None:
            return None
        return CacheEntry(info, w.broadcast_bytes(entry.onnx if entry else None),
                          w.broadcast_bytes(entry._weights if entry else None))  # type: ignore[arg-type]

    def _read(self, key: str) -> CacheEntry | None:
        meta = self.root / f"{key}.json"
        if not meta.exists():
            return None
        weights = self.root / f"{key}.safetensors"
        onnx_path = self.root / f"{key}.onnx"
        return CacheEntry(json.loads(meta.read_text()), onnx_path.read_bytes() if onnx_path.exists() else None,
                          weights if weights.exists() else None)

    def save(self, key: str, info: dict, model=None, onnx: bytes | None = None) -> None:
        """Store a stage result (rank 0 writes; every process waits until it is committed)."""
        if self.world.main:
            self._write(key, info, model, onnx)
        self.world.barrier()

    def _write(self, key: str, info: dict, model, onnx: bytes | None) -> None:
        if model is not None:
            from safetensors.torch import save_file

            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            write_atomically(self.root / f"{key}.safetensors", lambda tmp: save_file(state, str(tmp)))
        if onnx is not None:
            write_bytes_atomically(self.root / f"{key}.onnx", onnx)
        write_text_atomically(self.root / f"{key}.json", json.dumps(info, default=str))  # written last: the commit
