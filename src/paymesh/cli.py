"""`paymesh`: the ops command line.

paymesh migrate [SERVICE ...]    create the database if needed and apply migrations
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/paymesh"


def migrate(args: argparse.Namespace) -> int:
    from paymesh import services
    from paymesh.platform import migrations

    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    migrations.ensure_database(database_url)
    unknown = sorted(set(args.services) - set(services.ALL))
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    for name in args.services or list(services.ALL):
        definition = services.ALL[name]
        migrations.upgrade(database_url, definition.schema, definition.migrations_dir)
        print(f"migrated {name} (schema {definition.schema})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paymesh", description="paymesh ops commands")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate_parser = commands.add_parser("migrate", help="apply database migrations")
    migrate_parser.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help="gateway, vault, rebill or webhook (all by default)",
    )
    migrate_parser.set_defaults(handler=migrate)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
