"""slimship verify: check every hash of a package (and, with --key, its signature)."""

HELP = "verify a package's hashes (every part and the whole file)"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("--key", action="append", default=[], metavar="KEY.pub",
                   help="trusted public key (repeatable): also require a valid signature by one of them")


def run(args) -> int:
    from slimship.package.format import verify_package

    r = verify_package(args.package)
    print(f"{args.package}: OK ({len(r['parts'])} parts, {r['size_bytes']:,} bytes, sha256 {r['package_sha256']})")
    if args.key:
        from slimship.package.sign import verify_signature_file

        check = verify_signature_file(args.package, args.key)
        print(f"{args.package}: signature OK (key {check.key_id}, {check.key_path}; signed hash {check.signed_sha256})")
    return 0
