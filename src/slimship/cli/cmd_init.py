"""slimship init: print a complete, commented recipe for a model and a data set."""

HELP = "write a commented YAML recipe with sensible defaults (to stdout, or --out FILE)"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="timm architecture, e.g. tf_efficientnet_lite0")
    p.add_argument("--weights", default=None, help="weight package, .safetensors/.pth path, or none")
    p.add_argument("--data", required=True, help="image folder, idx folder, .npz, or a built-in name (fashion-mnist)")
    p.add_argument("--test", default=None, help="a separate test set (same kind as --data)")
    p.add_argument("--image-size", type=int, default=None, help="input resolution (default: chosen from the data)")
    p.add_argument("--out", default=None, help="write to this file instead of stdout")


def run(args) -> int:
    from slimship.recipe_template import render_recipe

    text = render_recipe(model=args.model, weights=args.weights, data=args.data, test=args.test,
                         image_size=args.image_size)
    if args.out:
        import os
        from pathlib import Path

        p = Path(args.out)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, p)
        print(f"wrote {p}")
    else:
        print(text, end="")
    return 0
