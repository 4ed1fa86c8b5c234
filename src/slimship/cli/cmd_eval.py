"""slimship eval: accuracy of a package on a data set, with the package's own runtime and preprocessing."""

HELP = "evaluate a .slim package on labelled data (image or text folder, idx, npz, csv/jsonl, built-in test split)"


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

    from slimship.api.packages import evaluate_package

    out = evaluate_package(args.package, args.data, base=args.base, runtime=args.runtime)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        rec = out["recorded_accuracy"]
        extra = f" (recorded at packing: {100 * rec:.2f} %)" if isinstance(rec, (int, float)) else ""
        print(f"{args.package}: accuracy {100 * out['accuracy']:.2f} % on {out['examples']} {out['example_kind']} from "
              f"{args.data} in {out['runtime']}{extra}")
    return 0
