"""The Python API: ``run(recipe, out)`` does model → transfer → compress → evaluate → package.

Every stage's result is cached under ``OUT/.work`` keyed by the hash of what produced it, so an interrupted
run resumes where it stopped, and a re-run with a changed compression plan does not redo the transfer.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from slimship.errors import SlimshipError
from slimship.fsutil import write_atomically, write_bytes_atomically, write_text_atomically
from slimship.progress import Reporter
from slimship.recipe import Recipe, recipe_to_dict


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Cache:
    """Stage results under OUT/.work: safetensors state + JSON side data (+ ONNX bytes)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def load(self, key: str, model=None):
        meta = self.root / f"{key}.json"
        if not meta.exists():
            return None
        info = json.loads(meta.read_text())
        if model is not None:
            from safetensors.torch import load_file

            from slimship.models.rebuild import apply_arch_edits_

            apply_arch_edits_(model, info.get("arch_edits", {}))
            model.load_state_dict(load_file(str(self.root / f"{key}.safetensors")))
        onnx_path = self.root / f"{key}.onnx"
        info["onnx"] = onnx_path.read_bytes() if onnx_path.exists() else None
        return info

    def save(self, key: str, info: dict, model=None, onnx: bytes | None = None) -> None:
        if model is not None:
            from safetensors.torch import save_file

            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            write_atomically(self.root / f"{key}.safetensors", lambda tmp: save_file(state, str(tmp)))
        if onnx is not None:
            write_bytes_atomically(self.root / f"{key}.onnx", onnx)
        write_text_atomically(self.root / f"{key}.json", json.dumps(info, default=str))  # written last: the commit


def _write_delta(pkg_dir: Path, entry: dict, blob: bytes, info: dict, *, full: str, entries: list[dict]) -> dict:
    """Write ``NAME.delta.slim`` beside ``base.slim``; return what the metrics record about it."""
    from slimship.package.delta import pack_delta

    path = pkg_dir / f"{entry['name']}.delta.slim"
    info = {k: v for k, v in info.items() if k != "tensors"}
    size = pack_delta(path, base_package=pkg_dir / "base.slim", task_package=entry["package"], blob=blob, info=info)
    full_bytes = next(e["size_bytes"] for e in entries if e["name"] == full)
    return {"path": str(path), "bytes": size, "base_bytes": (pkg_dir / "base.slim").stat().st_size,
            "full_bytes": full_bytes, "fraction_of_full": round(size / full_bytes, 4),
            "changed_fraction": info.get("changed_fraction"), "parts_xz_bytes": info.get("xz_bytes")}


def run(recipe: Recipe, out: str | Path, *, quiet: bool = False, fresh: bool = False) -> dict:
    """Execute ``recipe`` and write OUT/{metrics.json, report.md, run.log, model.slim, packages/*.slim}.

    Returns the metrics dictionary (the content of metrics.json). Raises SlimshipError for bad input.
    """
    import torch

    from slimship.compress import METHODS, ModelState
    from slimship.compress.handlers import CompressContext
    from slimship.data import load_dataset
    from slimship.data.split import stratified_subsample
    from slimship.data.transforms import Preprocessing, resize_uint8
    from slimship.evaluate.measure import finish_latency, measure_and_pack, test_inputs
    from slimship.evaluate.report import render_markdown, select_winner
    from slimship.models import create_model
    from slimship.transfer import transfer_model

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SlimshipError(f"--out {out} exists and is not a folder: choose another path")
    out.mkdir(parents=True, exist_ok=True)
    if fresh and (out / ".work").exists():
        shutil.rmtree(out / ".work")
    rep = Reporter(out / "run.log", quiet=quiet)
    t_start = time.perf_counter()
    torch.manual_seed(recipe.seed)
    cache = _Cache(out / ".work")
    rd = recipe_to_dict(recipe)
    try:
        # ---- data ------------------------------------------------------------------------------------
        d = recipe.data
        splits = load_dataset(d.source, test=d.test, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                              train_limit=d.train_limit, test_limit=d.test_limit, seed=recipe.seed)
        if d.val_limit and len(splits.val) > d.val_limit:
            splits.val = splits.val.subset(stratified_subsample(splits.val.labels, d.val_limit, recipe.seed))
            splits.info.setdefault("sizes", {})["val"] = len(splits.val)
        size = recipe.model.image_size
        rep.log(f"data {d.source}: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test, "
                f"{splits.num_classes} classes, {splits.channels} channel(s), resized to {size}x{size}")
        X, VX, TX = (resize_uint8(s.images, size) for s in (splits.train, splits.val, splits.test))
        Y, VY, TY = (torch.from_numpy(s.labels.astype("int64")) for s in (splits.train, splits.val, splits.test))

        # ---- model + transfer --------------------------------------------------------------------------
        m = recipe.model

        def build(weights):
            return create_model(m.architecture, splits.num_classes, weights=weights, image_size=size,
                                trust_pickle=m.trust_pickle, mean=tuple(m.mean) if m.mean else None,
                                std=tuple(m.std) if m.std else None)

        built = build(m.weights)
        rep.log(f"model {m.architecture}: weights {built.weights_report.get('source')} "
                f"({built.weights_report.get('layout', '-')}, {built.weights_report.get('loaded', 0)} tensors)")
        pre = Preprocessing(size, splits.channels, built.mean, built.std)
        # The data's bytes are part of the key: editing the image folder must not reuse stale stage results.
        fingerprint = hashlib.sha256()
        for t in (X, Y, VX, VY):
            fingerprint.update(t.numpy().tobytes())
        base_key = _key(rd["model"], rd["data"], recipe.seed, fingerprint.hexdigest())
        results = transfer_model(recipe, built.model, build, (X, Y), (VX, VY), pre, cache, base_key, rep)
        dense = results["dense"]

        # ---- compress ----------------------------------------------------------------------------------
        ctx = CompressContext(X, Y, VX, VY, pre, dense["model"], lambda: build(None).model, rep.log, rep, recipe.seed,
                              source=built.model)
        states: dict[str, tuple[ModelState, float]] = {}
        memo: dict[str, ModelState] = {}
        for cand in recipe.compress.candidates:
            state = ModelState(model=dense["model"])
            t0 = time.perf_counter()
            for i, step in enumerate(cand.steps):
                k = _key(dense["key"], [s.model_dump(mode="json") for s in cand.steps[: i + 1]])
                if k in memo:
                    state = memo[k]
                    continue
                model_shell = build(None).model
                hit = cache.load(k, model_shell)
                if hit is not None:
                    rep.log(f"{cand.name}: step {i + 1} ({step.method}) restored from cache")
                    state = ModelState(model=model_shell.eval(), onnx=hit["onnx"], arch_edits=hit.get("arch_edits", {}),
                                       notes=hit.get("notes", {}))
                else:
                    rep.log(f"{cand.name}: step {i + 1}/{len(cand.steps)} {step.method}")
                    state = METHODS.get(step.method).handler(state, step, ctx)
                    cache.save(k, {"arch_edits": state.arch_edits, "notes": state.notes}, state.model, state.onnx)
                memo[k] = state
            states[cand.name] = (state, time.perf_counter() - t0)

        # ---- evaluate + package ------------------------------------------------------------------------
        from slimship.models.export import export_onnx
        from slimship.models.onnx_fold import affine_batchnorms

        val_in, test_in = test_inputs(VX, VY, pre), test_inputs(TX, TY, pre)
        pkg_dir = out / "packages"
        pkg_dir.mkdir(exist_ok=True)
        base_pack = {"architecture": m.architecture, "class_names": splits.class_names, "preprocessing": pre, "recipe": rd}
        entries = []
        ev = recipe.evaluate
        todo = [(name, r, False) for name, r in results.items() if name != "dense"]
        for name, (state, secs) in states.items():
            todo.append((name, {"model": state.model, "onnx": state.onnx, "arch_edits": state.arch_edits,
                                "notes": state.notes, "seconds": secs, "kind": "compressed"}, True))
        pack_args_of = {}
        deltas = {}  # name -> (blob, info): task models stored as a delta on packages/base.slim
        for name, r, compressed in todo:
            rep.log(f"measuring {name}")
            # Compressed models without a deploy graph of their own keep BN unfolded, so shared/sparse weights
            # stay exactly shared/sparse and the package stores them in the compact encoding.
            encode = compressed and not r.get("onnx")
            if r["kind"] == "delta":
                from slimship.package import task_delta

                if not deltas:
                    base_onnx = task_delta.base_onnx(built.model, size, pre.model_channels)
                    task_delta.write_base(pkg_dir / "base.slim", base_onnx, architecture=m.architecture,
                                          preprocessing=pre, recipe={"model": rd["model"]})
                onnx, blob, info = task_delta.encode_task(base_onnx, r["model"], size, pre.model_channels,
                                                          recipe.transfer.delta.value_bits)
                deltas[name] = (blob, info)
            else:
                onnx = r.get("onnx") or export_onnx(r["model"], size, fold_bn=not encode)
                if encode:  # BN kept unfolded: store it as a float16 affine (2 numbers per channel, not 4)
                    onnx = affine_batchnorms(onnx)
            extra = {"train_seconds": round(r.get("seconds", 0.0), 1), "notes": r.get("notes", {})}
            pack_args_of[name] = {**base_pack, "arch_edits": r.get("arch_edits", {}), "encode_weights": encode}
            entries.append(measure_and_pack(
                name=name, kind=r["kind"], model=r["model"], onnx=onnx, path=pkg_dir / f"{name}.slim",
                pack_args=pack_args_of[name], val=val_in, test=test_in,
                compressed=compressed, batch_sizes=ev.batch_sizes, runs=ev.latency_runs,
                pytorch_latency=(r is dense), extra=extra,
            ))
        rep.log(f"latency: {len(entries)} deploy graphs, interleaved, batch sizes {ev.batch_sizes}")
        finish_latency(entries, pack_args_of, batch_sizes=ev.batch_sizes, runs=ev.latency_runs)
        for e in entries:
            if e["name"] in deltas:
                e["delta_package"] = _write_delta(pkg_dir, e, *deltas[e["name"]], full=results["finetuned"]["name"],
                                                  entries=entries)
                rep.log(f"{e['name']}: stored as {e['delta_package']['bytes']:,} bytes against "
                        f"packages/base.slim ({e['delta_package']['base_bytes']:,} bytes, shared by every task)")
        winner = select_winner(entries, dense_name=dense["name"], budget_points=recipe.compress.accuracy_budget)
        write_atomically(out / "model.slim", lambda tmp: shutil.copyfile(pkg_dir / f"{winner['name']}.slim", tmp))
        metrics = {
            "slimship_version": __import__("slimship").__version__,
            "recipe": recipe.name,
            "dataset": {**splits.info, "class_names": splits.class_names, "num_classes": splits.num_classes,
                        "image_size": size, "preprocessing": pre.to_dict()},
            "reference": dense["name"],
            "accuracy_budget_points": recipe.compress.accuracy_budget,
            "selected": winner["name"],
            "package": str(out / "model.slim"),
            "models": entries,
            "wall_seconds": round(time.perf_counter() - t_start, 1),
            "threads": torch.get_num_threads(),
        }
        write_text_atomically(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
        write_text_atomically(out / "report.md", render_markdown(metrics))
        rep.log(f"done in {metrics['wall_seconds']} s: {out / 'model.slim'} ({winner['name']})")
        return metrics
    finally:
        rep.close()
