"""Where a run's time goes: CPU seconds per stage, from a cProfile of one run.

    python benchmarks/profile_run.py [recipes/demo-profile.yaml] [--out /tmp/prof] [--wall]

It runs the recipe (default: the demo's stages on a smaller slice with epoch budgets) under cProfile and prints
the cumulative time of each stage and of the main parts inside it. By default the clock is this process's CPU
time, which a machine shared with other work disturbs far less than wall time (``--wall`` for wall time on a
quiet machine). To compare two trees, run the same command in each. ``OUT.prof`` keeps the whole profile
(``python -m pstats OUT.prof``).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import sys
import time
from pathlib import Path

# (label, regular expression over "file:line(function)"); time is counted at the outermost matching call
STAGES = [
    ("whole run", r"api/run\.py:\d+\(run\)"),
    ("data: load and prepare", r"task\.py:\d+\((load_task_data|prepare_task_data)\)"),
    ("training loops (every train call)", r"trainer\.py:\d+\(train\)"),
    ("  validation passes inside them", r"trainer\.py:\d+\(accuracy\)"),
    ("  optimizer steps", r"optim/optimizer\.py:\d+\(wrapper\)"),
    ("probe", r"stage\.py:\d+\(_probe\)"),
    ("  features", r"probe\.py:\d+\(extract_features\)"),
    ("  logistic-regression head", r"probe\.py:\d+\(fit_linear_head\)"),
    ("fine-tune", r"stage\.py:\d+\(_finetune\)"),
    ("scratch baseline", r"stage\.py:\d+\(_scratch\)"),
    ("int8 steps", r"int8/__init__\.py:\d+\(_int8\)"),
    ("  post-training search (calibration, scoring)", r"quantize\.py:\d+\(quantize_int8\)"),
    ("  QAT", r"int8/__init__\.py:\d+\(_int8_qat\)"),
    ("prune_channels steps", r"prune_channels\.py:\d+\(_prune_channels\)"),
    ("  BatchNorm re-estimation", r"prune_channels\.py:\d+\(recalibrate_bn_\)"),
    ("  recovery fine-tunes", r"prune_channels\.py:\d+\(recover_round\)"),
    ("measure and package", r"api/run\.py:\d+\(_measure_and_package\)"),
    ("  ONNX Runtime accuracy (val, test)", r"measure\.py:\d+\(accuracy\)"),
    ("  latency, interleaved", r"measure\.py:\d+\(measure_latency\)"),
    ("  PyTorch eager latency", r"latency\.py:\d+\(torch_latency\)"),
    ("  packages written and read back", r"package/stage\.py:\d+\(write\)"),
    ("ONNX exports (everywhere)", r"models/export\.py:\d+\(export_onnx\)"),
]


def stage_table(stats: pstats.Stats) -> list[tuple[str, float, int]]:
    """(label, seconds, calls) per stage; a call inside another matching call is not counted twice."""
    out = []
    for label, pattern in STAGES:
        rx, total, calls = re.compile(pattern), 0.0, 0
        for (file, line, fn), (_, ncalls, _, cumtime, callers) in stats.stats.items():  # type: ignore[attr-defined]
            if not rx.search(f"{file}:{line}({fn})"):
                continue
            if any(rx.search(f"{c[0]}:{c[1]}({c[2]})") for c in callers):
                continue  # recursion / nesting: the outer call has it
            total += cumtime
            calls += ncalls
        out.append((label, total, calls))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", default=str(Path(__file__).resolve().parents[1] / "recipes/demo-profile.yaml"))
    ap.add_argument("--out", default="/tmp/slimship-profile")
    ap.add_argument("--wall", action="store_true", help="wall-clock time instead of this process's CPU time")
    args = ap.parse_args()
    from slimship.api import run
    from slimship.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    prof = cProfile.Profile(time.perf_counter if args.wall else time.process_time)
    w0, c0 = time.perf_counter(), time.process_time()
    prof.enable()
    metrics = run(recipe, args.out, quiet=True, fresh=True)
    prof.disable()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    prof.dump_stats(f"{args.out}.prof")
    clock = "wall" if args.wall else "CPU"
    print(f"{recipe.name}: wall {wall:.1f} s, CPU {cpu:.1f} s ({metrics['threads']} torch threads)")
    ft = next(m for m in metrics["models"] if m["name"] == "finetuned")["notes"]
    print(f"fine-tune: {ft['steps']} steps, {ft['images_per_second']} img/s (wall)")
    print(f"\n{'stage (' + clock + ' seconds, cumulative)':48s} {'seconds':>8s} {'share':>6s} {'calls':>6s}")
    rows = stage_table(pstats.Stats(f"{args.out}.prof"))
    whole = rows[0][1] or 1.0
    for label, secs, calls in rows:
        print(f"{label:48s} {secs:8.1f} {100 * secs / whole:5.1f}% {calls:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
