"""``slimship`` command line: parse, call the API, print. One module per subcommand.

User mistakes (:class:`SlimshipError`) are printed as one line on stderr with exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from slimship import __version__
from slimship.core.errors import SlimshipError

SUBCOMMANDS = ["init", "run", "search", "report", "eval", "predict", "demo", "list", "inspect", "verify", "export",
               "push", "pull", "store", "serve", "sign", "keygen"]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    p = argparse.ArgumentParser(prog="slimship", description="Transfer, compress, evaluate and package a model.")
    p.add_argument("--version", action="version", version=f"slimship {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        mod = importlib.import_module(f"slimship.cli.cmd_{name}")
        sp = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p




def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except SlimshipError as e:
        print(f"slimship: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slimship: interrupted; re-run the same command to resume from the last finished stage", file=sys.stderr)
        return 130
    except MemoryError:
        print("slimship: error: out of memory: lower data.train_limit or model.image_size in the recipe", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
