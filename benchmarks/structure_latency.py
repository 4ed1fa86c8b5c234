"""How fast could a compressed structure be, before any training? Untrained copies of a CNN with whole blocks
removed and, optionally, the input pooled, as int8 deploy graphs, timed against the dense fp32 graph.

    python benchmarks/structure_latency.py [--arch tf_efficientnet_lite0] [--size 64] [--drop 0 3 6 9]
                                           [--downscale] [--rounds 5]

Latency depends on the structure, not on the weights, so a structure can be timed in about a minute, before
anything is trained: the way to know whether a speed target is reachable by dropping blocks, and how many must go. Each
structure is built with random weights (slimship's model factory, static "same" padding, BatchNorm folded at
export), quantized to int8 as the `int8` method does it (static QDQ, per-channel weights, calibrated on random
inputs: the scales do not change the kernels that run), and timed in ONNX Runtime with slimship's sessions,
interleaved with the dense fp32 graph, at batch 1 and 64. Blocks go from the last droppable one backwards (a real
`drop_blocks` step chooses them on validation, so its speed differs a little). Accuracy is not measured here:
train the structure with `slimship run` or `slimship search` for that.

Measured on W0's setting (EfficientNet-Lite0 at 64 px, 2 cores): docs/search.md.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="tf_efficientnet_lite0")
    ap.add_argument("--size", type=int, default=64, help="input resolution (px)")
    ap.add_argument("--drop", type=int, nargs="+", default=[0, 3, 6, 9], help="numbers of droppable blocks removed")
    ap.add_argument("--downscale", action="store_true", help="also time each structure with its input pooled 2x2")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each times every graph)")
    args = ap.parse_args()

    import torch

    from slimship.compress.downscale import input_layer
    from slimship.compress.drop_blocks import droppable_blocks, remove_blocks_
    from slimship.evaluate.latency import interleaved_latency
    from slimship.models.export import export_onnx
    from slimship.models.factory import create_model
    from slimship.models.rebuild import pool_input_

    torch.manual_seed(0)
    base = create_model(args.arch, 10, weights=None, image_size=args.size).model.eval()
    example = torch.randn(2, 3, args.size, args.size)
    names = droppable_blocks(base, example)
    print(f"{args.arch} at {args.size} px: {len(names)} droppable blocks ({', '.join(names)})")
    graphs = {"dense fp32": export_onnx(base, args.size)}
    for k in args.drop:
        if not 0 <= k <= len(names):
            raise SystemExit(f"--drop {k}: {args.arch} has {len(names)} droppable blocks; ask for 0 to {len(names)}")
        for pooled in ([False, True] if args.downscale else [False]):
            m = copy.deepcopy(base)
            remove_blocks_(m, names[len(names) - k:])
            if pooled:
                pool_input_(m, input_layer(m, example), 2, (3, args.size, args.size))
            label = f"{k} blocks gone{', input pooled 2x2' if pooled else ''}, int8"
            graphs[label] = int8_graph(export_onnx(m.eval(), args.size), args.size)
    ms = interleaved_latency(graphs, (3, args.size, args.size), (1, 64), rounds=args.rounds)
    dense = ms["dense fp32"]
    print(f"{'structure (untrained)':44s} {'batch 1 ms':>10s} {'x dense':>8s} {'batch 64 ms':>11s} {'x dense':>8s}")
    for name, t in ms.items():
        print(f"{name:44s} {t['batch1']:10.3f} {dense['batch1'] / t['batch1']:8.2f} "
              f"{t['batch64']:11.2f} {dense['batch64'] / t['batch64']:8.2f}")
    print("ONNX Runtime, slimship's session settings; medians of interleaved rounds; random weights (speed only)")
    return 0


def int8_graph(fp32: bytes, size: int) -> bytes:
    """The static QDQ int8 graph slimship's `int8` method writes (per-channel weights, MinMax), calibrated on
    random inputs."""
    from slimship.compress.int8.quantize import _optimize, quantize_one

    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((8, 3, size, size), dtype=np.float32) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        opt = _optimize(fp32, tmp)
        return quantize_one(opt, calib, method="minmax", keep_fp32="none", reduce_range=True, per_channel=True,
                            percentile=99.99, tmp=tmp)


if __name__ == "__main__":
    raise SystemExit(main())
