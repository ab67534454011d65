"""``petalapor db start|stop|status|migrate``."""

from __future__ import annotations

import argparse
import json

import db
from db.migrate import migrate
from petalapor.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``db`` command group."""
    parser = sub.add_parser("db", help="run the embedded PostGIS cluster (var/pg/)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser(
        "start", help="initdb if needed, start, create PostGIS, migrate"
    ).set_defaults(func=start)
    actions.add_parser("stop", help="stop the embedded cluster").set_defaults(func=stop)
    actions.add_parser(
        "status", help="show where the database is and whether it runs"
    ).set_defaults(func=status)
    actions.add_parser("migrate", help="apply pending migrations").set_defaults(func=run_migrate)
    actions.add_parser("url", help="print the database URL").set_defaults(func=url)


def start(args: argparse.Namespace) -> int:
    """Start (or reuse) the database and migrate it."""
    settings = Settings()
    if settings.db.url:
        print("DATABASE_URL is set: using that server, no embedded cluster started")
    dsn = db.database_url(settings)
    print(f"database ready: {dsn}")
    return 0


def stop(args: argparse.Namespace) -> int:
    """Stop the embedded cluster."""
    settings = Settings()
    if settings.db.url:
        print("DATABASE_URL is set: nothing to stop")
        return 0
    stopped = db.cluster_for(settings).stop()
    print("stopped" if stopped else "not running")
    return 0


def status(args: argparse.Namespace) -> int:
    """Print the cluster's state as JSON; exit 1 when it does not run."""
    settings = Settings()
    if settings.db.url:
        print(json.dumps({"external": True, "dsn": settings.db.url}))
        return 0
    state = db.cluster_for(settings).status()
    print(json.dumps(state, indent=2))
    return 0 if state["running"] else 1


def run_migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations."""
    dsn = db.database_url(Settings(), migrate=False)
    done = migrate(dsn)
    print("up to date" if not done else "applied: " + ", ".join(m.path.name for m in done))
    return 0


def url(args: argparse.Namespace) -> int:
    """Print the DSN (starting the embedded cluster if needed)."""
    print(db.database_url(Settings()))
    return 0
