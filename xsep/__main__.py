"""Command line: `python -m xsep info`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xsep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, build, and which backend is available on which device")
    args = parser.parse_args(argv)
    if args.command == "info":
        from xsep import info

        return info.main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
