"""slimship keygen: a new Ed25519 key pair for signing packages."""

HELP = "create an Ed25519 key pair: KEY (private, mode 0600) and KEY.pub (public, to hand out)"


def add_arguments(p) -> None:
    p.add_argument("key", metavar="KEY", help="private key file to create (never overwritten); KEY.pub beside it")


def run(args) -> int:
    from slimship.package.sign import generate_key

    private, public, kid = generate_key(args.key)
    print(f"key {kid}: private key {private} (keep it secret), public key {public} (give it to whoever verifies)")
    return 0
