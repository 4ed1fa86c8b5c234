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


# Optional dependencies (imported where they are needed) -> the pip extra that installs them (pyproject.toml).
OPTIONAL_MODULES = {"fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve", "multipart": "serve",
                    "starlette": "serve", "cryptography": "sign", "optuna": "search", "openvino": "openvino",
                    "nncf": "openvino", "transformers": "text", "tokenizers": "text", "peft": "text", "s3fs": "s3"}


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

#: Longest error line printed; a message is cut there, saying how much was left out.
MAX_ERROR_CHARS = 1000


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` as one printable line of at most ``limit`` characters: line breaks and runs of blanks become one
    space, other control characters (terminal escapes) are shown escaped, and a cut in the middle says how much
    was left out."""
    text = " ".join(message.split())
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    if len(text) > limit:  # keep the start and the end: what went wrong, and what to do about it
        head, tail = (limit - 40) * 3 // 5, (limit - 40) * 2 // 5
        text = f"{text[:head]} …({len(text) - head - tail:,} characters left out)… {text[-tail:]}"
    return text


def _warn_if_incomplete(package) -> None:
    """A package read from a run folder marked INCOMPLETE (a run that did not finish) is named on stderr."""
    if not isinstance(package, str):
        return
    from slimship.api.run_folder import MARKER, incomplete_run

    folder = incomplete_run(package)
    if folder is not None:
        print(one_line(f"slimship: warning: {folder} is marked {MARKER}: the run writing it has not finished (or "
                       f"was stopped); re-run `slimship run RECIPE --out {folder}` to complete it"), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _warn_if_incomplete(getattr(args, "package", None))
    try:
        return int(args._run(args) or 0)
    except SlimshipError as e:
        print(f"slimship: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slimship: interrupted; re-run the same command to resume from the last finished stage", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        extra = OPTIONAL_MODULES.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"slimship: error: this needs {e.name}, which is not installed: pip install 'slimship[{extra}]' "
              "(or 'slimship[all]' for every optional feature)", file=sys.stderr)
        return 2
    except MemoryError:
        print("slimship: error: out of memory: lower data.train_limit or model.image_size in the recipe", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
