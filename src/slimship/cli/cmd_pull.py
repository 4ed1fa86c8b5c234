"""slimship pull: get a verified package back out of a model store (a task stored as a delta: rebuilt whole)."""

HELP = "fetch NAME, NAME@VERSION or NAME@sha256:HEX from a model store into a verified .slim file"


def add_arguments(p) -> None:
    p.add_argument("ref", metavar="NAME[@VERSION|@sha256:HEX]", help="package to fetch (NAME alone: the latest version)")
    p.add_argument("store", help="store: a folder or an fsspec URL (SLIMSHIP_S3_ENDPOINT sets an S3-compatible endpoint)")
    p.add_argument("-o", "--out", metavar="FILE", help="where to write the package (default: ./NAME.slim; a folder: NAME.slim in it)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file that holds something else")
    p.add_argument("--raw", action="store_true",
                   help="a task stored as a delta: write the delta package as stored, not the rebuilt full package")
    p.add_argument("--key", action="append", default=[], metavar="KEY.pub",
                   help="trusted public key (repeatable): refuse the package unless signed by one of them")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    import json
    from dataclasses import asdict

    from slimship.package.store import Store, storage_options_from_env

    store = Store(args.store, storage_options=storage_options_from_env(args.store))
    if args.key:
        from slimship.package.sign import pull_signed

        r, check = pull_signed(store, args.ref, args.key, out=args.out, raw=args.raw, force=args.force)
        if not args.json:
            print(f"signature OK: key {check.key_id} ({check.key_path}) signed sha256 {check.signed_sha256[:16]}…")
    else:
        r = store.pull(args.ref, out=args.out, raw=args.raw, force=args.force)
    if args.json:
        print(json.dumps(asdict(r), indent=2))
    elif r.rebuilt_from:
        print(f"pulled {r.name}@{r.version} (a delta, sha256:{r.package[:16]}…) rebuilt against its base "
              f"sha256:{r.rebuilt_from[:16]}… into a full package ({r.size_bytes:,} bytes, verified) at {r.path}")
    else:
        print(f"pulled {r.name}@{r.version} (sha256:{r.package[:16]}…, {r.size_bytes:,} bytes, verified) to {r.path}")
    return 0
