"""slimship demo: the built-in real-data run on the CPU (EfficientNet-Lite0 ImageNet → Fashion-MNIST)."""

HELP = "run the built-in demo: EfficientNet-Lite0 (ImageNet) -> Fashion-MNIST on the CPU (~12 min on 2 cores)"


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--fresh", action="store_true", help="ignore cached stage results")


def run(args) -> int:
    from importlib import resources

    import yaml

    from slimship.api import run as run_recipe
    from slimship.cli.table import print_table
    from slimship.recipe import parse_recipe

    text = resources.files("slimship").joinpath("recipes/demo.yaml").read_text()
    recipe = parse_recipe(yaml.safe_load(text), "built-in demo recipe")
    d = recipe.data
    print(f"slimship demo: {recipe.model.architecture} ({recipe.model.weights}) -> {d.source}, on the CPU.\n"
          f"To fit ~12 minutes on 2 cores it trains on a stratified {d.train_limit}-image subset of the 60k training "
          f"images at {recipe.model.image_size}x{recipe.model.image_size} px, validates on {d.val_limit}, and tests on "
          f"the full 10k test set. Output: {args.out}", flush=True)
    metrics = run_recipe(recipe, args.out, fresh=args.fresh)
    print_table(metrics)
    return 0
