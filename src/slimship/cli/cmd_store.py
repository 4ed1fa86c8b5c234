"""slimship store list|stats: what a model store holds and how much space it saves."""

HELP = "list a model store's packages (store list STORE) or its space use (store stats STORE)"

ACTIONS = ("list", "stats")


def add_arguments(p) -> None:
    # Sub-actions dispatch in run(): argparse's own "required" error would print a usage block, not one line.
    sub = p.add_subparsers(dest="store_action", metavar="ACTION")
    for action, text in (("list", "list every NAME@VERSION in a store"),
                         ("stats", "packages, logical vs physical bytes, bytes per package, bytes per task and delta savings")):
        sp = sub.add_parser(action, help=text, description=text)
        sp.add_argument("store", help="store: a folder or an fsspec URL (SLIMSHIP_S3_ENDPOINT sets an S3-compatible endpoint)")
        sp.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    from slimship.core.errors import SlimshipError
    from slimship.package.store import Store, storage_options_from_env

    action = getattr(args, "store_action", None)
    if action not in ACTIONS:
        raise SlimshipError("say what to do with the store: `slimship store list STORE` or `slimship store stats STORE`")
    store = Store(args.store, storage_options=storage_options_from_env(args.store))
    return _list(store, args.json) if action == "list" else _stats(store, args.json)


def _list(store, as_json: bool) -> int:
    import json
    from dataclasses import asdict

    entries = store.list()
    if as_json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    if not entries:
        print(f"{store.url}: no packages")
    for e in entries:
        cols = [f"{e.name}@{e.version}", f"sha256:{e.package[:16]}…", f"{e.size_bytes:,} bytes", e.created or "",
                "(latest)" if e.latest else ""]
        print("  ".join(c for c in cols if c))
    return 0


def _stats(store, as_json: bool) -> int:
    import json

    s = store.stats()
    if as_json:
        print(json.dumps(s, indent=2))
        return 0
    ratio = f"{s['dedup_ratio']:.2f}x" if s["dedup_ratio"] else "n/a"
    print(f"{s['store']}: {s['packages']} packages ({s['versions']} versions of {s['names']} names), "
          f"{s['blobs']} blobs")
    print(f"  logical {s['logical_bytes']:,} bytes, physical {s['physical_bytes']:,} bytes (dedup {ratio}), "
          f"{s['bytes_per_package']:,} bytes per package, {s['metadata_bytes']:,} bytes of records and refs")
    if s["unreferenced_packages"]:
        print(f"  {s['unreferenced_packages']} packages without a ref (interrupted pushes)")
    if not any(t["delta"] for t in s["tasks"]):
        return 0
    width = max(len(f"{t['name']}@{t['version']}") for t in s["tasks"])
    for t in s["tasks"]:
        full = f"{t['full_bytes']:,}" if t["full_bytes"] else "unknown"
        kind = f"delta of {t['base']}, full package {full} bytes" if t["delta"] else "full"
        print(f"  {(t['name'] + '@' + t['version']).ljust(width)}  {t['stored_bytes']:>13,} bytes  {kind}")
    print(f"  as full packages {s['full_package_bytes']:,} bytes, stored {s['stored_package_bytes']:,} bytes: "
          f"deltas save {s['delta_saved_bytes']:,} bytes ({100 * s['delta_saved_fraction']:.1f} %)")
    return 0
