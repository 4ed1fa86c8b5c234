"""slimship sign: add an Ed25519 signature to a package (docs/package-format.md, "Signatures")."""

HELP = "sign a package with an Ed25519 private key (verify with `slimship verify PKG --key KEY.pub`)"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package (rewritten in place, atomically, unless --out)")
    p.add_argument("--key", required=True, metavar="KEY", help="private key (PEM; `slimship keygen KEY` makes one)")
    p.add_argument("-o", "--out", metavar="FILE", help="write the signed package here instead")
    p.add_argument("--force", action="store_true", help="replace an existing --out file that holds something else")


def run(args) -> int:
    from slimship.package.sign import sign_package

    r = sign_package(args.package, args.key, out=args.out, force=args.force)
    print(f"signed {r['path']} with key {r['key_id']} (signed hash {r['signed_sha256']}; "
          f"{r['signatures']} signature(s); package sha256 now {r['package_sha256']})")
    return 0
