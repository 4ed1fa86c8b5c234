"""slimship store list|stats|check: what a model store holds, how much space it saves, and whether it is intact."""

import sys

HELP = ("list a model store's packages (store list STORE), its space use (store stats STORE), or its damage "
        "(store check STORE)")

ACTIONS = ("list", "stats", "check")


def add_arguments(p) -> None:
    # Sub-actions dispatch in run(): argparse's own "required" error would print a usage block, not one line.
    sub = p.add_subparsers(dest="store_action", metavar="ACTION")
    for action, text in (("list", "list every NAME@VERSION in a store (damaged entries skipped, with a warning)"),
                         ("stats", "packages, logical vs physical bytes, bytes per package, bytes per task and delta savings"),
                         ("check", "look for damage: bad refs, missing or corrupted records and blobs, dangling deltas "
                                   "(every blob re-hashed); exit status 1 if any")):
        sp = sub.add_parser(action, help=text, description=text)
        sp.add_argument("store", help="store: a folder or an fsspec URL (SLIMSHIP_S3_ENDPOINT sets an S3-compatible endpoint)")
        sp.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    from slimship.core.errors import SlimshipError
    from slimship.package.store import Store, storage_options_from_env

    action = getattr(args, "store_action", None)
    if action not in ACTIONS:
        raise SlimshipError("say what to do with the store: `slimship store list STORE`, `slimship store stats "
                            "STORE` or `slimship store check STORE`")
    store = Store(args.store, storage_options=storage_options_from_env(args.store))
    return {"list": _list, "stats": _stats, "check": _check}[action](store, args.json)


def _warn(store, problems: list[str]) -> int:
    """One warning line on stderr for damage a listing skipped; the exit status (1 if any)."""
    from slimship.package.manifest import printable

    if not problems:
        return 0
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    print(f"slimship: warning: skipped damaged entries: {printable(problems[0])}{more}; run `slimship store check "
          f"{printable(store.url)}`", file=sys.stderr)
    return 1


def _list(store, as_json: bool) -> int:
    import json
    from dataclasses import asdict

    from slimship.package.manifest import printable

    problems: list[str] = []
    entries = store.list(problems)
    if as_json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return _warn(store, problems)
    if not entries:
        print(f"{printable(store.url)}: no packages")
    for e in entries:
        cols = [f"{e.name}@{e.version}", f"sha256:{e.package[:16]}…", f"{e.size_bytes:,} bytes",
                printable(e.created or "", 40), "(latest)" if e.latest else ""]
        print("  ".join(c for c in cols if c))
    return _warn(store, problems)


def _stats(store, as_json: bool) -> int:
    import json

    from slimship.package.manifest import printable

    s = store.stats()
    if as_json:
        print(json.dumps(s, indent=2))
        return _warn(store, s["problems"])
    ratio = f"{s['dedup_ratio']:.2f}x" if s["dedup_ratio"] else "n/a"
    print(f"{printable(s['store'])}: {s['packages']} packages ({s['versions']} versions of {s['names']} names), "
          f"{s['blobs']} blobs")
    print(f"  logical {s['logical_bytes']:,} bytes, physical {s['physical_bytes']:,} bytes (dedup {ratio}), "
          f"{s['bytes_per_package']:,} bytes per package, {s['metadata_bytes']:,} bytes of records and refs")
    if s["unreferenced_packages"]:
        print(f"  {s['unreferenced_packages']} packages without a ref (interrupted pushes)")
    if s["problems"]:
        print(f"  DAMAGED: {_count(len(s['problems']), 'problem')}, e.g. {printable(s['problems'][0])}")
    if any(t["delta"] for t in s["tasks"]):
        width = max(len(f"{t['name']}@{t['version']}") for t in s["tasks"])
        for t in s["tasks"]:
            full = f"{t['full_bytes']:,}" if t["full_bytes"] else "unknown"
            kind = f"delta of {t['base']}, full package {full} bytes" if t["delta"] else "full"
            print(f"  {(t['name'] + '@' + t['version']).ljust(width)}  {t['stored_bytes']:>13,} bytes  {kind}")
        print(f"  as full packages {s['full_package_bytes']:,} bytes, stored {s['stored_package_bytes']:,} bytes: "
              f"deltas save {s['delta_saved_bytes']:,} bytes ({100 * s['delta_saved_fraction']:.1f} %)")
    return _warn(store, s["problems"])


def _check(store, as_json: bool) -> int:
    import json

    from slimship.package.manifest import printable

    r = store.check()
    if as_json:
        print(json.dumps(r, indent=2))
        return 1 if r["problems"] else 0
    state = _count(len(r["problems"]), "problem") if r["problems"] else "intact"
    print(f"{printable(r['store'])}: {state} ({_count(r['versions'], 'version')}, {_count(r['packages'], 'package')}, "
          f"{_count(r['blobs'], 'blob')} checked; {_count(r['unreferenced_packages'], 'package')} without a ref, "
          f"{_count(r['unused_blobs'], 'unused blob')})")
    for problem in r["problems"]:
        print(f"  {printable(problem, 300)}")
    if r["problems"]:
        print("  repair: push each damaged package again (blobs and records are rewritten), or remove its refs",
              file=sys.stderr)
    return 1 if r["problems"] else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
