"""slimship predict: classify image files with a package."""

HELP = "classify image files with a .slim package"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("--base", metavar="BASE.slim",
                   help="for a task stored as a delta: its base package (default: the matching .slim next to it)")
    p.add_argument("images", nargs="+", help="image files (any Pillow format)")
    p.add_argument("--top", type=int, default=3, help="classes to show per image")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    import json

    import numpy as np

    from slimship.data import load_images_for_prediction
    from slimship.package.pack import load_package

    pkg = load_package(args.package, base=args.base)
    images = load_images_for_prediction(args.images, pkg.preprocessing.channels, None)
    logits = pkg.logits(images)
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    rows = []
    for path, p in zip(args.images, probs):
        top = np.argsort(-p)[: max(1, args.top)]
        rows.append({"image": path, "top": [{"class": pkg.class_names[i], "probability": round(float(p[i]), 4)} for i in top]})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['image']}: " + ", ".join(f"{t['class']} {100 * t['probability']:.1f} %" for t in r["top"]))
    return 0
