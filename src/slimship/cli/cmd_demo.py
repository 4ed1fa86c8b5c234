"""slimship demo: the built-in real-data runs on the CPU (EfficientNet-Lite0 ImageNet → Fashion-MNIST; with
``--text``, all-MiniLM-L6-v2 → SpamAssassin spam/ham)."""

HELP = ("run the built-in demo: EfficientNet-Lite0 (ImageNet) -> Fashion-MNIST on the CPU (~12 min on 2 cores); "
        "--text: all-MiniLM-L6-v2 -> SpamAssassin mails")


def add_arguments(p) -> None:
    p.add_argument("--out", default=None, help="output folder (default runs/demo, or runs/text-demo with --text)")
    p.add_argument("--fresh", action="store_true", help="ignore cached stage results")
    p.add_argument("--text", action="store_true", help="the text demo: a sentence encoder fine-tuned on spam/ham mails")


def _describe_text(recipe, out: str) -> str:
    d, m = recipe.data, recipe.model
    return (f"slimship demo --text: {m.architecture} -> {d.source} (spam/ham), on the CPU.\n"
            f"To fit ~15 minutes on 2 cores it fine-tunes on a stratified {d.train_limit}-mail subset of the training "
            f"part of a 70/30 split, with mails cut at {m.max_length} tokens, validates on {d.val_limit}, and tests on "
            f"all 1,814 test mails. Output: {out}")


def run(args) -> int:
    from importlib import resources

    import yaml

    from slimship.api import run as run_recipe
    from slimship.cli.table import print_table
    from slimship.recipe import parse_recipe

    name = "text-demo" if args.text else "demo"
    out = args.out or f"runs/{name}"
    text = resources.files("slimship").joinpath(f"recipes/{name}.yaml").read_text()
    recipe = parse_recipe(yaml.safe_load(text), f"built-in {name} recipe")
    d = recipe.data
    if args.text:
        print(_describe_text(recipe, out), flush=True)
    else:
        print(f"slimship demo: {recipe.model.architecture} ({recipe.model.weights}) -> {d.source}, on the CPU.\n"
              f"To fit ~12 minutes on 2 cores it trains on a stratified {d.train_limit}-image subset of the 60k "
              f"training images at {recipe.model.image_size}x{recipe.model.image_size} px, validates on {d.val_limit}, "
              f"and tests on the full 10k test set. Output: {out}", flush=True)
    metrics = run_recipe(recipe, out, fresh=args.fresh)
    print_table(metrics)
    return 0
