"""Run the demo recipe and print its figures beside the hand-made peer's (shared REFERENCE.md, workload W0).

    python benchmarks/demo_vs_peer.py [--out runs/bench] [--fresh]

Everything in the "slimship" rows is measured in this run on this machine (accuracy on the 10k Fashion-MNIST
test images, package bytes on disk, ONNX Runtime latency medians). The peer rows are quoted from REFERENCE.md
(measured there on the same machine kind with the peers' own dense model, so compare drops and ratios, not
absolute accuracies). Stage results are cached in --out/.work: a re-run only re-measures.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

import yaml

PEER_W0 = [  # name, accuracy %, drop, bytes MB, b1 ms, b64 ms  (REFERENCE.md, "strongest peer tools on W0")
    ("peer dense fp32 (ONNX Runtime)", 86.30, 0.0, 13.5, 1.11, 45.4),
    ("peer ORT static QDQ per-channel", 85.52, -0.78, 3.86, 0.64, 24.8),
    ("peer NNCF PTQ MIXED -> OpenVINO", 86.12, -0.18, 3.92, 0.76, 12.2),
    ("peer NNCF PTQ default -> OpenVINO", 85.02, -1.28, 3.90, 0.60, 9.3),
    ("peer Torch-Pruning 30% + 360 s KD", 78.9, -7.4, 6.8, 2.3, 124.0),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()

    from slimship.api import run
    from slimship.recipe import parse_recipe

    recipe = parse_recipe(yaml.safe_load(resources.files("slimship").joinpath("recipes/demo.yaml").read_text()))
    m = run(recipe, args.out, fresh=args.fresh)
    by = {e["name"]: e for e in m["models"]}
    ref = by[m["reference"]]
    print(f"\nW0 (CPU, {m['threads']} threads): EfficientNet-Lite0 ImageNet -> Fashion-MNIST, "
          f"{m['dataset']['sizes']['train']} train images at {m['dataset']['image_size']} px, 10k test images")
    hdr = f"{'model':38s} {'acc %':>7s} {'drop':>6s} {'MB':>6s} {'x smaller':>9s} {'MACs M':>7s} {'ms b1':>7s} {'ms b64':>7s}"
    print(hdr)
    print("-" * len(hdr))
    for e in m["models"]:
        print(f"{'slimship ' + e['name']:38s} {100 * e['accuracy']:7.2f} {100 * (e['accuracy'] - ref['accuracy']):+6.2f} "
              f"{e['size_bytes'] / 1e6:6.2f} {ref['size_bytes'] / e['size_bytes']:9.2f} {e['macs'] / 1e6:7.1f} "
              f"{e['latency_ms']['batch1']:7.3f} {e['latency_ms']['batch64']:7.2f}")
    pt = ref.get("pytorch_eager_latency_ms", {})
    if pt:
        print(f"{'slimship dense, PyTorch eager':38s} {'':7s} {'':6s} {'':6s} {'':9s} {'':7s} {pt['batch1']:7.3f} {pt['batch64']:7.2f}")
    for name, acc, drop, mb, b1, b64 in PEER_W0:
        print(f"{name + ' (quoted)':38s} {acc:7.2f} {drop:+6.2f} {mb:6.2f} {13.5 / mb:9.2f} {'':7s} {b1:7.3f} {b64:7.2f}")
    sc = by.get("scratch")
    win = by[m["selected"]]
    checks = {
        "transfer beats scratch": sc is not None and ref["accuracy"] > sc["accuracy"],
        "shipped model within 1.0 point of dense (test)": win["accuracy"] >= ref["accuracy"] - 0.01,
        "shipped package >= 3.5x smaller than dense": ref["size_bytes"] / win["size_bytes"] >= 3.5,
        "faster than dense ORT fp32 at batch 1": win["latency_ms"]["batch1"] < ref["latency_ms"]["batch1"],
        "faster than dense ORT fp32 at batch 64": win["latency_ms"]["batch64"] < ref["latency_ms"]["batch64"],
    }
    print(f"\nshipped: {m['selected']}")
    for k, ok in checks.items():
        print(f"  [{'x' if ok else ' '}] {k}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
