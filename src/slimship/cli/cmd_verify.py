"""slimship verify: check every hash of a package, its deploy graph and its manifest (and, with --key, its
signature)."""

HELP = ("verify a package: every hash (each part and the whole file), a self-contained deploy graph, and a "
        "manifest within bounds that fits the graph")


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("--key", action="append", default=[], metavar="KEY.pub",
                   help="trusted public key (repeatable): also require a valid signature by one of them")


def run(args) -> int:
    from slimship.package.manifest import printable
    from slimship.package.verify import verify

    r = verify(args.package)
    print(f"{printable(args.package)}: OK ({len(r['parts'])} parts, {r['size_bytes']:,} bytes, sha256 "
          f"{r['package_sha256']}; deploy graph in {r['graph']} self-contained, {r['classes']} classes)")
    if args.key:
        from slimship.package.sign import verify_signature_file

        check = verify_signature_file(args.package, args.key)
        print(f"{printable(args.package)}: signature OK (key {check.key_id}, {check.key_path}; signed hash "
              f"{check.signed_sha256})")
    return 0
