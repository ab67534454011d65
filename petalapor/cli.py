"""The ``petalapor`` command.

Each area of the project adds its subcommands from one module in
``petalapor/commands/`` with a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from petalapor import __version__
from petalapor.errors import PetalaporError

#: Modules in petalapor.commands, in the order their commands appear in --help.
COMMAND_MODULES = ["up", "db", "boundaries", "serve"]
OPTIONAL_MODULES = ["reports", "layers", "tiles", "analysis", "keys"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="petalapor", description="Jakarta citizen-report maps and spatial resolution analysis."
    )
    parser.add_argument("--version", action="version", version=f"petalapor {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES + OPTIONAL_MODULES:
        try:
            module = importlib.import_module(f"petalapor.commands.{name}")
        except ModuleNotFoundError as exc:
            if name in OPTIONAL_MODULES and exc.name == f"petalapor.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except PetalaporError as exc:
        print(f"petalapor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
