"""`paymesh`: the ops command line.

paymesh migrate [SERVICE ...]          create the database if needed, apply migrations
paymesh keys init                      create the services' signing keys (PAYMESH_KEYS_DIR)
paymesh merchants create --name NAME   a new merchant and its test and live secret keys
paymesh vault init-keyring             create the local KEK keyring file if missing
paymesh vault rotate-kek               make a new KEK version primary (cards re-wrap online)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from paymesh.platform.logging import configure_logging

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/paymesh"


def database_url() -> str:
    return os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)


def migrate(args: argparse.Namespace) -> int:
    from paymesh import services
    from paymesh.platform import migrations

    unknown = sorted(set(args.services) - set(services.ALL))
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    migrations.ensure_database(database_url())
    for name in args.services or list(services.ALL):
        definition = services.ALL[name]
        migrations.upgrade(database_url(), definition.schema, definition.migrations_dir)
        print(f"migrated {name} (schema {definition.schema})")
    return 0


def keys_init(_args: argparse.Namespace) -> int:
    from paymesh.platform.service_auth import init_keys

    keys_dir = Path(os.environ.get("PAYMESH_KEYS_DIR", "var/keys"))
    created = init_keys(keys_dir)
    print(f"service keys in {keys_dir}: created {', '.join(created) or 'none (all present)'}")
    return 0


def merchants_create(args: argparse.Namespace) -> int:
    from gateway_svc.merchants import MerchantRepository
    from paymesh.platform.db import create_engine

    async def create():
        engine = create_engine(database_url(), pool_size=1)
        try:
            return await MerchantRepository(engine).create(args.name)
        finally:
            await engine.dispose()

    merchant = asyncio.run(create())
    print(
        json.dumps(
            {
                "id": merchant.id,
                "name": merchant.name,
                "secret_key": merchant.secret_key,
                "live_secret_key": merchant.live_secret_key,
            }
        )
    )
    return 0


def vault_init_keyring(_args: argparse.Namespace) -> int:
    from paymesh.platform.config import VaultSettings
    from vault_proxy_svc.keys import LocalKeyring

    settings = VaultSettings()
    if settings.kms_provider != "local":
        print(f"VAULT_KMS_PROVIDER is {settings.kms_provider}: no local keyring needed")
        return 0
    created = LocalKeyring.create_file(settings.keyring_file)
    print(f"vault keyring {settings.keyring_file}: {'created' if created else 'present'}")
    return 0


def vault_rotate_kek(_args: argparse.Namespace) -> int:
    from paymesh.platform.config import VaultSettings
    from paymesh.platform.db import create_engine
    from vault_proxy_svc.kek import KekManager
    from vault_proxy_svc.keys import build_key_provider

    settings = VaultSettings()

    async def rotate():
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            keks = KekManager(engine, build_key_provider(settings))
            await keks.ensure_ready()
            return await keks.rotate(actor="ops:cli")
        finally:
            await engine.dispose()

    previous, primary = asyncio.run(rotate())
    print(json.dumps({"previous": previous, "primary": primary}))
    return 0


def audit_verify(_args: argparse.Namespace) -> int:
    from gateway_svc.audit_chain import first_break
    from paymesh.platform.db import create_engine

    async def verify():
        engine = create_engine(database_url(), pool_size=1)
        try:
            return await first_break(engine)
        finally:
            await engine.dispose()

    broken = asyncio.run(verify())
    if broken is None:
        print(json.dumps({"intact": True}))
        return 0
    print(
        json.dumps(
            {
                "intact": False,
                "first_broken_row": broken.row_id,
                "merchant_id": broken.merchant_id,
                "problem": broken.problem,
            }
        )
    )
    return 1


def ops_token(args: argparse.Namespace) -> int:
    from paymesh.platform.service_auth import TokenIssuer

    keys_dir = Path(os.environ.get("PAYMESH_KEYS_DIR", "var/keys"))
    print(TokenIssuer("ops", keys_dir).token_for(args.audience))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paymesh", description="paymesh ops commands")
    commands = parser.add_subparsers(dest="command", required=True)

    migrate_parser = commands.add_parser("migrate", help="apply database migrations")
    migrate_parser.add_argument(
        "services", nargs="*", metavar="SERVICE", help="gateway, vault, rebill or webhook"
    )
    migrate_parser.set_defaults(handler=migrate)

    keys = commands.add_parser("keys", help="service signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    keys.add_parser("init", help="create missing key pairs").set_defaults(handler=keys_init)

    merchants = commands.add_parser("merchants", help="merchants and API keys").add_subparsers(
        dest="merchants_command", required=True
    )
    create = merchants.add_parser("create", help="create a merchant; prints its keys as JSON")
    create.add_argument("--name", required=True)
    create.set_defaults(handler=merchants_create)

    vault = commands.add_parser("vault", help="vault key management").add_subparsers(
        dest="vault_command", required=True
    )
    vault.add_parser("init-keyring", help="create the local keyring").set_defaults(
        handler=vault_init_keyring
    )
    vault.add_parser("rotate-kek", help="make a new KEK version primary").set_defaults(
        handler=vault_rotate_kek
    )

    audit = commands.add_parser("audit", help="payment audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    audit.add_parser("verify", help="verify the hash chain").set_defaults(handler=audit_verify)

    token = commands.add_parser("ops-token", help="a service token for admin RPCs")
    token.add_argument("--audience", default="gateway")
    token.set_defaults(handler=ops_token)

    args = parser.parse_args(argv)
    # Logs go to stderr as JSON, so stdout carries only the command's answer.
    configure_logging("cli", os.environ.get("LOG_LEVEL", "INFO"), stream=sys.stderr)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
