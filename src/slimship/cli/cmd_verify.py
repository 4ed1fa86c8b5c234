"""slimship verify: check every hash of a package."""

HELP = "verify a package's hashes (every part and the whole file)"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")


def run(args) -> int:
    from slimship.package.format import verify_package

    r = verify_package(args.package)
    print(f"{args.package}: OK ({len(r['parts'])} parts, {r['size_bytes']:,} bytes, sha256 {r['package_sha256']})")
    return 0
