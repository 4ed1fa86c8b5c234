"""slimship demo: the built-in real-data runs, sized for 2 CPU cores (EfficientNet-Lite0 ImageNet → Fashion-MNIST;
with ``--text``, all-MiniLM-L6-v2 → SpamAssassin spam/ham)."""

HELP = ("run the built-in demo: EfficientNet-Lite0 (ImageNet) -> Fashion-MNIST (~6 min on 2 quiet CPU cores); "
        "--text: all-MiniLM-L6-v2 -> SpamAssassin mails")


def add_arguments(p) -> None:
    from slimship.cli.cmd_run import add_device_argument

    p.add_argument("--out", default=None, help="output folder (default runs/demo, or runs/text-demo with --text)")
    p.add_argument("--fresh", action="store_true", help="ignore cached stage results")
    p.add_argument("--text", action="store_true", help="the text demo: a sentence encoder fine-tuned on spam/ham mails")
    add_device_argument(p)


def _describe_text(recipe, out: str) -> str:
    d, m = recipe.data, recipe.model
    return (f"slimship demo --text: {m.architecture} -> {d.source} (spam/ham).\n"
            f"To fit ~15 minutes on 2 CPU cores it fine-tunes on a stratified {d.train_limit}-mail subset of the "
            f"training part of a 70/30 split, with mails cut at {m.max_length} tokens, validates on {d.val_limit}, and "
            f"tests on all 1,814 test mails. Output: {out}")


def run(args) -> int:
    from importlib import resources

    import yaml

    from slimship.api import run as run_recipe
    from slimship.cli.cmd_run import _main_process
    from slimship.cli.table import print_table
    from slimship.recipe import parse_recipe

    name = "text-demo" if args.text else "demo"
    out = args.out or f"runs/{name}"
    text = resources.files("slimship").joinpath(f"recipes/{name}.yaml").read_text()
    recipe = parse_recipe(yaml.safe_load(text), f"built-in {name} recipe")
    d = recipe.data
    if _main_process():
        if args.text:
            print(_describe_text(recipe, out), flush=True)
        else:
            print(f"slimship demo: {recipe.model.architecture} ({recipe.model.weights}) -> {d.source}.\n"
                  f"To fit ~6 minutes on 2 quiet CPU cores it trains on a stratified {d.train_limit}-image subset of the "
                  f"60k training images at {recipe.model.image_size}x{recipe.model.image_size} px, validates on "
                  f"{d.val_limit}, and tests on the full 10k test set. Output: {out}", flush=True)
    from slimship.core.distributed import leave_world

    try:
        metrics = run_recipe(recipe, out, fresh=args.fresh, device=args.device)
    finally:
        leave_world()
    if _main_process():
        print_table(metrics)
    return 0
