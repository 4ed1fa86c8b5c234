"""slimship predict: classify image files or folders of them (or texts / text files, with a text package), a batch
at a time."""

HELP = "classify image files or folders of images, or texts and text files (.txt, .eml) with a text package"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("--base", metavar="BASE.slim",
                   help="for a task stored as a delta: its base package (default: the matching .slim next to it)")
    p.add_argument("images", nargs="+", metavar="INPUT",
                   help="image files (any Pillow format) or folders of images (recursive); for a text package: "
                        "texts in quotes or .txt/.eml files")
    p.add_argument("--top", type=int, default=3, help="classes to show per image")
    p.add_argument("--batch-size", type=int, default=64, help="images decoded and classified at once (default 64)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    import json

    from slimship.api.packages import iter_predictions
    from slimship.core.errors import SlimshipError

    if args.batch_size < 1:
        raise SlimshipError(f"--batch-size {args.batch_size}: pass a positive number of images, e.g. 64")
    rows = iter_predictions(args.package, args.images, top=args.top, base=args.base, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(list(rows), indent=2))
    else:  # printed as each batch is classified
        for r in rows:
            print(f"{r.get('image', r.get('text'))}: " + ", ".join(f"{t['class']} {100 * t['probability']:.1f} %"
                                                             for t in r["top"]), flush=True)
    return 0
