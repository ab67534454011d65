"""``petalapor keys create|revoke|list``: API keys for OPD and admin users."""

from __future__ import annotations

import argparse
import json

import psycopg

import db
from petalapor.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``keys`` command group."""
    parser = sub.add_parser("keys", help="create, revoke and list API keys (OPD and admin roles)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create a key; the token is printed once and never stored",
        description="The printed token goes in the X-API-Key header (or Authorization: Bearer).",
    )
    create.add_argument("--role", choices=["opd", "admin"], required=True)
    create.add_argument(
        "--opd", help="OPD code from data/categories.toml (required for --role opd)"
    )
    create.add_argument("--name", help="who holds the key")
    create.add_argument("--json", action="store_true", help="print the key and token as JSON")
    create.set_defaults(func=run_create)
    revoke = actions.add_parser("revoke", help="revoke a key by id (its sessions end too)")
    revoke.add_argument("id", help="key id (the 12 hex digits after plk_)")
    revoke.set_defaults(func=run_revoke)
    listing = actions.add_parser("list", help="list keys (never their tokens)")
    listing.add_argument("--active", action="store_true", help="hide revoked keys")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=run_list)


def _connect(args: argparse.Namespace) -> psycopg.Connection:
    """A connection to the configured database (``args.dsn`` when a caller sets it)."""
    dsn = getattr(args, "dsn", None) or db.database_url(Settings())
    return psycopg.connect(dsn)


def run_create(args: argparse.Namespace) -> int:
    """Create a key and print its token."""
    from api.auth import create_key

    with _connect(args) as conn:
        key, token = create_key(conn, args.role, args.opd, args.name)
    if getattr(args, "json", False):
        print(
            json.dumps(
                {"id": key.id, "role": key.role, "opd": key.opd, "name": key.name, "token": token}
            )
        )
    else:
        scope = f" for {key.opd}" if key.opd else ""
        print(f"created {key.role} key {key.id}{scope}; the token is shown only now:")
        print(token)
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    """Revoke a key."""
    from api.auth import revoke_key

    with _connect(args) as conn:
        key = revoke_key(conn, args.id)
    print(f"revoked key {key.id} at {key.revoked_at:%Y-%m-%d %H:%M:%S %Z}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the keys as a table (or JSON)."""
    from api.auth import list_keys

    with _connect(args) as conn:
        keys = list_keys(conn, include_revoked=not args.active)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": k.id,
                        "role": k.role,
                        "opd": k.opd,
                        "name": k.name,
                        "created_at": k.created_at.isoformat(),
                        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                        "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
                    }
                    for k in keys
                ]
            )
        )
        return 0
    print(f"{'id':<13} {'role':<6} {'opd':<16} {'state':<8} {'created':<17} {'last used':<17} name")
    for k in keys:
        used = f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "-"
        state = "active" if k.active else "revoked"
        print(
            f"{k.id:<13} {k.role:<6} {k.opd or '-':<16} {state:<8} {k.created_at:%Y-%m-%d %H:%M} "
            f"{used:<17} {k.name or ''}"
        )
    return 0
