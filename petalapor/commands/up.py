"""``petalapor up``: the main job: database, data, service."""

from __future__ import annotations

import argparse
import importlib

import db
from petalapor.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``up`` command."""
    parser = sub.add_parser(
        "up", help="start PostGIS, load boundaries (and demo data), serve the map"
    )
    parser.add_argument("--no-serve", action="store_true", help="load everything, then exit")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.set_defaults(func=up)


#: Loading steps run by ``up`` after the boundaries, when their modules exist:
#: (module in petalapor.commands, function name). Each must be idempotent.
LOAD_STEPS: list[tuple[str, str]] = [
    ("reports", "load_demo"),
    ("layers", "load_default_layers"),
]


def up(args: argparse.Namespace) -> int:
    """Start the database, import boundaries, run the load steps, then serve."""
    from petalapor.commands import boundaries, serve

    settings = Settings()
    dsn = db.database_url(settings)
    print(f"database ready: {dsn}")
    boundaries.run_import(
        argparse.Namespace(path=None, kelurahan=None, rw=None, force=False, check=False)
    )
    for module_name, func_name in LOAD_STEPS:
        try:
            module = importlib.import_module(f"petalapor.commands.{module_name}")
        except ModuleNotFoundError:
            continue
        getattr(module, func_name)(dsn)
    if args.no_serve:
        return 0
    return serve.serve(argparse.Namespace(host=args.host, port=args.port, workers=1))
