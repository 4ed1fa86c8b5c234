"""slimship push: put a package into a model store (a folder or an fsspec URL such as s3://bucket/prefix)."""

HELP = "store a .slim package in a model store (folder or URL) as NAME@VERSION"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("store", help="store: a folder, file:///path, s3://bucket/prefix or another fsspec URL "
                                 "(SLIMSHIP_S3_ENDPOINT sets an S3-compatible endpoint)")
    p.add_argument("--name", help="package name (default: the file name without .slim)")
    p.add_argument("--tag", metavar="VERSION", help="version (default: the first 12 hex digits of the package's sha256)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    import json
    from dataclasses import asdict

    from slimship.package.store import Store, storage_options_from_env

    store = Store(args.store, storage_options=storage_options_from_env(args.store))
    r = store.push(args.package, name=args.name, version=args.tag)
    if args.json:
        print(json.dumps(asdict(r), indent=2))
    else:
        print(f"pushed {r.name}@{r.version} (sha256:{r.package[:16]}…, {r.size_bytes:,} bytes; "
              f"{r.bytes_written:,} new bytes in {r.blobs_written} blobs) to {args.store}")
    return 0
