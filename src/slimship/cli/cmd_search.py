"""slimship search: Optuna search of compression chains under the recipe's accuracy budget."""

HELP = ("search compression chains under the accuracy budget (Optuna: accuracy, bytes, latency); re-run the same "
        "command to continue the study")


def add_arguments(p) -> None:
    p.add_argument("recipe", help="recipe YAML file (its compress.candidates are not used; the budget is)")
    p.add_argument("--out", required=True, help="output folder (summary.md, trials.json/csv, pareto.json, recommended/)")
    p.add_argument("--trials", type=int, help="stop when the study has N finished trials (all workers together)")
    p.add_argument("--time", help="stop starting trials after T: seconds, or e.g. 45m, 1.5h")
    p.add_argument("--storage", help="Optuna storage URL shared by several workers (default: sqlite in --out)")
    p.add_argument("--study", help="study name in the storage (default: the recipe's name)")
    p.add_argument("--space", help="search space file (YAML): methods, option ranges, chains, seeds, sampler")
    p.add_argument("--quiet", action="store_true", help="log to the file only")


def run(args) -> int:
    from slimship.api.search import search
    from slimship.recipe import load_recipe
    from slimship.search import load_space, parse_duration

    recipe = load_recipe(args.recipe)
    space = load_space(args.space) if args.space else None
    seconds = parse_duration(args.time) if args.time is not None else None
    s = search(recipe, args.out, trials=args.trials, seconds=seconds, storage=args.storage, study=args.study,
               space=space, quiet=args.quiet)
    if not args.quiet:
        c = s["trials"]
        print(f"study {s['study']}: {c['complete']} trials measured, {c['pruned']} stopped early, {c['fail']} failed; "
              f"{s['recommended']['within_budget']} within the accuracy budget")
        for role in ("smallest", "fastest"):
            if role in s:
                print(f"{role} within budget: trial {s[role]['trial']}: {s[role]['chain']} -> {s[role]['package']}")
        if s["nothing_within_budget"]:
            print("no trial is within the accuracy budget; the closest are kept in "
                  f"{args.out}/closest/ (see summary.md)")
        print(f"summary: {args.out}/summary.md")
    return 0
