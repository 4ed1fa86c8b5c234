"""slimship run: execute a recipe (also under torchrun: ``torchrun --nproc-per-node N -m slimship run ...``)."""

HELP = "run a recipe: transfer, compress, evaluate, package (resumes an interrupted run in the same --out)"


def add_arguments(p) -> None:
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--out", required=True, help="output folder (metrics.json, report.md, run.log, model.slim)")
    p.add_argument("--fresh", action="store_true", help="ignore cached stage results in --out/.work")
    p.add_argument("--quiet", action="store_true", help="log to the file only")
    add_device_argument(p)


def add_device_argument(p) -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="where to train (default: the recipe's device.type, auto = CUDA when present, else the CPU)")


def run(args) -> int:
    from slimship.api import run as run_recipe
    from slimship.cli.table import print_table
    from slimship.recipe import load_recipe

    from slimship.core.distributed import leave_world

    recipe = load_recipe(args.recipe)
    try:
        metrics = run_recipe(recipe, args.out, quiet=args.quiet, fresh=args.fresh, device=args.device)
    finally:
        leave_world()
    if not args.quiet and _main_process():
        print_table(metrics)
    return 0


def _main_process() -> bool:
    """False in the processes torchrun started besides rank 0 (they print nothing)."""
    import os

    return os.environ.get("RANK", "0") == "0"
