"""slimship eval: accuracy of a package on a data set, with the package's own runtime and preprocessing."""

HELP = "evaluate a .slim package on labelled data (folder, idx, npz, fashion-mnist test split)"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("--base", metavar="BASE.slim",
                   help="for a task stored as a delta: its base package (default: the matching .slim next to it)")
    p.add_argument("--data", required=True, help="labelled data; for a source with its own test split, that split")
    p.add_argument("--runtime", help="run the graph in this runtime (slimship list) instead of the one the package "
                                     "records as fastest")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args) -> int:
    import json
    import time

    from slimship.data import load_eval_split
    from slimship.package.pack import load_package

    pkg = load_package(args.package, base=args.base, runtime=args.runtime)
    pre = pkg.preprocessing
    split = load_eval_split(args.data, pkg.class_names, pre.channels, None)
    t0 = time.perf_counter()
    logits = pkg.logits(split.images)
    secs = time.perf_counter() - t0
    acc = float((logits.argmax(1) == split.labels).mean()) if len(split) else float("nan")
    out = {"package": args.package, "data": args.data, "images": len(split), "accuracy": acc,
           "recorded_accuracy": pkg.manifest.get("metrics", {}).get("accuracy"),
           "seconds": round(secs, 3), "runtime": pkg.runtime}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        rec = out["recorded_accuracy"]
        extra = f" (recorded at packing: {100 * rec:.2f} %)" if isinstance(rec, (int, float)) else ""
        print(f"{args.package}: accuracy {100 * acc:.2f} % on {len(split)} images from {args.data} in {pkg.runtime}"
              f"{extra}")
    return 0
