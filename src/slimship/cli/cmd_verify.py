"""slimship verify: check every hash of a package, its deploy graph and its manifest."""

HELP = ("verify a package: every hash (each part and the whole file), a self-contained deploy graph, and a "
        "manifest within bounds that fits the graph")


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")


def run(args) -> int:
    from slimship.package.manifest import printable
    from slimship.package.verify import verify

    r = verify(args.package)
    print(f"{printable(args.package)}: OK ({len(r['parts'])} parts, {r['size_bytes']:,} bytes, sha256 "
          f"{r['package_sha256']}; deploy graph in {r['graph']} self-contained, {r['classes']} classes)")
    return 0
