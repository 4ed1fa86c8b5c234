"""Issue 14 §1 on W0: slimship measured in ONNX Runtime and OpenVINO beside the strongest peer, from one run.

    python benchmarks/w0_runtimes.py [--recipe recipes/w0-runtimes.yaml] [--out runs/w0-runtimes] [--smoke]

1. ``slimship run`` on the recipe: every candidate is measured in every installed runtime and ships, at each batch
   size, for the one it is fastest in there; the smallest package within the 1-point budget (on validation) ships.
2. The peer, built here from the same dense model: NNCF post-training int8 (``nncf.quantize``, default preset)
   of the dense ONNX deploy graph read back from ``packages/<dense>.slim``, calibrated on 512 training images,
   run in OpenVINO (f32 float layers, as our sessions). Its size is the quantized ONNX file gzipped (level 9).
3. One interleaved latency run over the dense model (ONNX Runtime), the peer (OpenVINO) and every compressed
   candidate in every runtime, so machine drift lands on all alike; then the targets: the shipped model, each
   batch size in the runtime its package records for it, is faster than the peer at batch 1 and at batch 64, no
   larger, and within the budget on the 10k test images.

Latency figures need a quiet machine; ratios from one interleaved run are what the checks use. ``--smoke`` runs a
few-minute version (small data, tiny budgets, 64 calibration images) to check the script, not the targets.
Stage results are cached in --out/.work, so a re-run only re-measures (and rebuilds the peer).
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np

SMOKE = {"data": {"train_limit": 600, "val_limit": 200, "test_limit": 1000}, "budget": 0.1, "calibration": 64}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(Path(__file__).parents[1] / "recipes" / "w0-runtimes.yaml"))
    ap.add_argument("--out", default="runs/w0-runtimes")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of the final interleaved timing")
    ap.add_argument("--smoke", action="store_true", help="a few-minute version that checks the script")
    args = ap.parse_args()

    from slimship.api import run
    from slimship.core.runtime import REFERENCE_RUNTIME

    recipe = _recipe(args.recipe, args.smoke)
    m = run(recipe, args.out, fresh=args.fresh)
    by = {e["name"]: e for e in m["models"]}
    ref, win = by[m["reference"]], by[m["selected"]]
    _print_run(m)

    calibration = SMOKE["calibration"] if args.smoke else 512
    print(f"\nbuilding the peer: NNCF int8 (default preset) of the dense ONNX graph, {calibration} calibration images")
    test, val, calib = _data(recipe, calibration)
    dense_graph = _graph(ref["package"])
    peer = _nncf_int8(dense_graph, calib)
    peer_gzip = len(gzip.compress(peer, 9))
    peer_acc, peer_val = _accuracy(peer, "openvino", test), _accuracy(peer, "openvino", val)

    # one interleaved timing: dense in the reference runtime, the peer in OpenVINO, every compressed model in
    # every runtime it was measured in
    sessions = {("dense", REFERENCE_RUNTIME): (dense_graph, REFERENCE_RUNTIME), ("peer", "openvino"): (peer, "openvino")}
    for e in m["models"]:
        if e["compressed"]:
            sessions.update({(e["name"], rt): (_graph(e["package"]), rt) for rt in e["runtimes"]})
    size = m["dataset"]["image_size"]
    lat = _interleaved(sessions, (3, size, size), recipe.evaluate.batch_sizes, args.rounds)
    base = lat[("dense", REFERENCE_RUNTIME)]

    print(f"\none interleaved timing ({args.rounds} rounds, {m['threads']} threads), ms and × dense ONNX Runtime fp32:")
    print(f"{'model':34s} {'runtime':12s} {'test %':>7s} {'bytes':>11s} " + " ".join(
        f"{'ms b' + str(b):>9s} {'×':>5s}" for b in recipe.evaluate.batch_sizes))
    rows = [("dense fp32", ("dense", REFERENCE_RUNTIME), ref["runtimes"][REFERENCE_RUNTIME]["accuracy"],
             ref["size_bytes"]),
            ("peer NNCF int8 (default)", ("peer", "openvino"), peer_acc, peer_gzip)]
    rows += [(e["name"] + _ships(e, rt, win), (e["name"], rt),
              e["runtimes"][rt]["accuracy"], e["size_bytes"]) for e in m["models"] if e["compressed"]
             for rt in e["runtimes"]]
    for label, key, acc, nbytes in rows:
        print(f"{label:34s} {key[1]:12s} {100 * acc:7.2f} {nbytes:11,d} " + " ".join(
            f"{lat[key][k]:9.3f} {base[k] / lat[key][k]:5.2f}" for k in base))
    print(f"peer: {len(peer):,} bytes ONNX, {peer_gzip:,} gzip; val {100 * peer_val:.2f} %")

    if not win["compressed"]:
        print("\nno compressed model is within the budget: the dense model ships")
        return 1
    # the shipped package runs each batch size in the runtime it records for it (docs/runtimes.md)
    ships_in = {k: win.get("runtime_by_batch", {}).get(k, win["runtime"]) for k in base}
    shipped = {k: lat[(win["name"], rt)][k] for k, rt in ships_in.items()}
    peer_lat = lat[("peer", "openvino")]
    checks = {f"shipped ({win['name']} in {ships_in[k]}) faster than the peer at batch {k.removeprefix('batch')} "
              f"({shipped[k]:.3f} vs {peer_lat[k]:.3f} ms)": shipped[k] < peer_lat[k] for k in base}
    checks[f"shipped package no larger than the peer's gzip ({win['size_bytes']:,} vs {peer_gzip:,} bytes)"] = (
        win["size_bytes"] <= peer_gzip)
    checks[f"shipped within {m['accuracy_budget_points']} point(s) of dense on the test set "
           f"({100 * win['accuracy']:.2f} vs {100 * ref['accuracy']:.2f} %)"] = (
        win["accuracy"] >= ref["accuracy"] - m["accuracy_budget_points"] / 100)
    print(f"\nshipped: {win['name']} ({', '.join(f'{rt} at batch {k[5:]}' for k, rt in ships_in.items())}): "
          f"test {100 * win['accuracy']:.2f} % in {win['runtime']} "
          f"({100 * (win['accuracy'] - peer_acc):+.2f} vs the peer)")
    for k, ok in checks.items():
        print(f"  [{'x' if ok else ' '}] {k}")
    print("  (smoke run: figures check the script, not the targets)" if args.smoke else "")
    return 0 if all(checks.values()) else 1


def _ships(e: dict, runtime: str, win: dict) -> str:
    """`` (ships)`` / `` (ships at b64)`` for the runtime(s) the shipped model runs in, else nothing."""
    from slimship.evaluate.runtime_choice import ships_at

    where = ships_at(e.get("runtime_by_batch", {}), e["runtime"], runtime) if e["name"] == win["name"] else ""
    return "" if not where else " (ships)" if where == "yes" else f" (ships at {where})"


def _recipe(path: str, smoke: bool):
    import yaml

    from slimship.recipe import load_recipe, parse_recipe

    if not smoke:
        return load_recipe(path)
    d = yaml.safe_load(Path(path).read_text())
    d["name"] += "-smoke"
    d["data"].update(SMOKE["data"])
    d["transfer"]["budget"] = {"epochs": SMOKE["budget"]}
    for c in d["compress"]["candidates"]:
        for s in c["steps"]:
            for k in ("recovery", "qat"):
                if s.get(k):
                    s[k].update(epochs=SMOKE["budget"], seconds=None)
            if s["method"] == "int8":
                s["calibration_images"] = SMOKE["calibration"]
    d["evaluate"]["latency_runs"] = 6
    return parse_recipe(d, f"{path} (smoke)")


def _print_run(m: dict) -> None:
    from slimship.evaluate.report import RUNTIME_COLUMNS, runtime_rows
    from slimship.evaluate.runtime_choice import describe

    print(f"\nW0 ({m['threads']} threads): {m['dataset']['sizes']['train']} train images at {m['dataset']['image_size']}"
          f" px, {m['dataset']['sizes']['test']} test images; every model in every runtime (from the run):")
    rows = runtime_rows(m)
    widths = {k: max(len(h), *(len(r[k]) for r in rows)) for k, h in RUNTIME_COLUMNS}
    print("  ".join(h.ljust(widths[k]) for k, h in RUNTIME_COLUMNS))
    for r in rows:
        print("  ".join(r[k].ljust(widths[k]) for k, _ in RUNTIME_COLUMNS))
    by = {e["name"]: e for e in m["models"]}
    print("package bytes: " + ", ".join(f"{e['name']} {e['size_bytes']:,}" for e in m["models"]))
    e = by[m["selected"]]
    print(f"shipped (smallest within budget on validation): {m['selected']} in "
          f"{describe(e.get('runtime_by_batch', {}), e['runtime'])}")


def _data(recipe, calibration: int):
    """The run's test and validation splits as model inputs, and ``calibration`` training images (chosen as the
    int8 method chooses its own)."""
    from slimship.data.task import load_task_data, prepare_task_data
    from slimship.evaluate.measure import EvalSet
    from slimship.models.kinds import adapter_for

    adapter = adapter_for(recipe.model)
    splits = load_task_data(recipe.data, seed=recipe.seed)
    pre = adapter.preprocessing(splits.channels)
    data = prepare_task_data(splits, pre)
    idx = np.sort(np.random.default_rng(recipe.seed).permutation(len(data.train))[:calibration])
    return EvalSet.of(data.test, pre), EvalSet.of(data.val, pre), pre.model_input_np(data.train.x[idx].numpy())


def _graph(package: str) -> bytes:
    from slimship.package.pack import load_package

    return load_package(package).onnx


def _nncf_int8(onnx_bytes: bytes, calib: np.ndarray) -> bytes:
    """The peer: ``nncf.quantize`` with its defaults (preset, fast bias correction) on ``len(calib)`` images."""
    import nncf
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    name = model.graph.input[0].name
    dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))], lambda x: {name: x})
    return nncf.quantize(model, dataset, subset_size=len(calib)).SerializeToString()


def _accuracy(graph: bytes, runtime: str, split) -> float:
    from slimship.core.runtime import session

    return split.accuracy(session(graph, runtime))


def _interleaved(graphs: dict, input_shape, batch_sizes, rounds: int) -> dict:
    from slimship.core.runtime import session
    from slimship.evaluate.latency import interleaved_session_latency

    sessions = {key: session(g, rt) for key, (g, rt) in graphs.items()}
    return interleaved_session_latency(sessions, input_shape, tuple(batch_sizes), runs=30, rounds=rounds)


if __name__ == "__main__":
    sys.exit(main())
