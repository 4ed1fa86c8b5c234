"""slimship demo: the built-in real-data run (EfficientNet-Lite0 ImageNet → Fashion-MNIST), sized for 2 CPU cores."""

HELP = "run the built-in demo: EfficientNet-Lite0 (ImageNet) -> Fashion-MNIST (~12 min on 2 CPU cores)"


def add_arguments(p) -> None:
    from slimship.cli.cmd_run import add_device_argument

    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--fresh", action="store_true", help="ignore cached stage results")
    add_device_argument(p)


def run(args) -> int:
    from importlib import resources

    import yaml

    from slimship.api import run as run_recipe
    from slimship.cli.cmd_run import _main_process
    from slimship.cli.table import print_table
    from slimship.recipe import parse_recipe

    text = resources.files("slimship").joinpath("recipes/demo.yaml").read_text()
    recipe = parse_recipe(yaml.safe_load(text), "built-in demo recipe")
    d = recipe.data
    if _main_process():
        print(f"slimship demo: {recipe.model.architecture} ({recipe.model.weights}) -> {d.source}.\n"
              f"To fit ~12 minutes on 2 CPU cores it trains on a stratified {d.train_limit}-image subset of the 60k "
              f"training images at {recipe.model.image_size}x{recipe.model.image_size} px, validates on {d.val_limit}, "
              f"and tests on the full 10k test set. Output: {args.out}", flush=True)
    from slimship.core.distributed import leave_world

    try:
        metrics = run_recipe(recipe, args.out, fresh=args.fresh, device=args.device)
    finally:
        leave_world()
    if _main_process():
        print_table(metrics)
    return 0
