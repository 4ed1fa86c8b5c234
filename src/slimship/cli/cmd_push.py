"""slimship push: put a package into a model store (a folder or an fsspec URL such as s3://bucket/prefix)."""

HELP = "store a .slim package in a model store (folder or URL) as NAME@VERSION; --base stores a task as a delta"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("store", help="store: a folder, file:///path, s3://bucket/prefix or another fsspec URL "
                                 "(SLIMSHIP_S3_ENDPOINT sets an S3-compatible endpoint)")
    p.add_argument("--name", help="package name (default: the file name without .slim)")
    p.add_argument("--tag", metavar="VERSION", help="version (default: the first 12 hex digits of the package's sha256)")
    p.add_argument("--base", metavar="BASE",
                   help="store the package as a delta against this base, already in the store: NAME[@VERSION|"
                        "@sha256:HEX], or the path of the base .slim that was pushed there")
    p.add_argument("--delta", metavar="MODE", default=None,
                   help="with --base: fp16 (default: every changed weight as an fp16 delta, checked in ONNX "
                        "Runtime), lossless (bit-exact) or lowrank (a truncated SVD per changed matrix: tasks "
                        "trained with strategy lora)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    import json
    from dataclasses import asdict

    from slimship.core.errors import SlimshipError
    from slimship.package.store import Store, push_delta, storage_options_from_env

    if args.delta is not None and args.base is None:
        raise SlimshipError("--delta needs --base BASE: the package in the store to encode the task against")
    store = Store(args.store, storage_options=storage_options_from_env(args.store))
    if args.base is None:
        r = store.push(args.package, name=args.name, version=args.tag)
    else:
        r = push_delta(store, args.package, args.base, name=args.name, version=args.tag, mode=args.delta or "fp16")
    if args.json:
        print(json.dumps(asdict(r), indent=2))
        return 0
    how = f"{r.size_bytes:,} bytes"
    if r.base is not None and r.full_bytes:
        how = (f"{r.size_bytes:,} bytes as a delta against {args.base}, "
               f"{100 * r.size_bytes / r.full_bytes:.1f} % of the full {r.full_bytes:,}")
    print(f"pushed {r.name}@{r.version} (sha256:{r.package[:16]}…, {how}; "
          f"{r.bytes_written:,} new bytes in {r.blobs_written} blobs) to {args.store}")
    if r.check is not None:
        c = r.check
        exact = "bit-exact" if c["bit_exact"] else f"max |logit difference| {c['max_abs_logit_diff']:.3g}"
        print(f"  checked in ONNX Runtime on {c['inputs']} random inputs: {exact}, "
              f"top-1 agreement {100 * c['top1_agreement']:.0f} %")
    if r.note:
        print(f"  note: {r.note}")
    return 0
