"""Command line: `python -m xsep {info,bench,train,kernels}`.

Each subcommand lives in its own module, which provides `add_parser(subparsers)` (registering its
options, with `func` set to a callable taking the parsed arguments and returning an exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module imports its heavy dependencies (matplotlib, timm, sklearn, ...) only when run.
SUBCOMMANDS = {
    "info": "xsep.info",
    "bench": "xsep.bench.cli",
    "train": "xsep.train",
    "kernels": "xsep.kernels.cli",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xsep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
