"""slimship run: execute a recipe."""

HELP = "run a recipe: transfer, compress, evaluate, package (resumes an interrupted run in the same --out)"


def add_arguments(p) -> None:
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--out", required=True, help="output folder (metrics.json, report.md, run.log, model.slim)")
    p.add_argument("--fresh", action="store_true", help="ignore cached stage results in --out/.work")
    p.add_argument("--quiet", action="store_true", help="log to the file only")


def run(args) -> int:
    from slimship.api import run as run_recipe
    from slimship.cli.table import print_table
    from slimship.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    metrics = run_recipe(recipe, args.out, quiet=args.quiet, fresh=args.fresh)
    if not args.quiet:
        print_table(metrics)
    return 0
