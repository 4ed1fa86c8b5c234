"""slimship predict: classify image files (or texts / text files, with a text package) with a package."""

HELP = "classify image files, or texts and text files (.txt, .eml) with a text package"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("--base", metavar="BASE.slim",
                   help="for a task stored as a delta: its base package (default: the matching .slim next to it)")
    p.add_argument("images", nargs="+", metavar="INPUT",
                   help="image files (any Pillow format); for a text package: texts in quotes or .txt/.eml files")
    p.add_argument("--top", type=int, default=3, help="classes to show per image")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    import json

    from slimship.api.packages import predict

    rows = predict(args.package, args.images, top=args.top, base=args.base)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r.get('image', r.get('text'))}: " + ", ".join(f"{t['class']} {100 * t['probability']:.1f} %" for t in r["top"]))
    return 0
