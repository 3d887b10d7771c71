"""`paymesh`: the ops command line.

paymesh migrate [SERVICE ...]          create the database if needed, apply migrations, create
                                       each service's database role and grant it its schema
paymesh keys init                      create the services' signing keys and the audit key
paymesh keys rotate [--identity NAME] [--overlap-seconds N]
                                       new service signing keys; the old ones still verify
                                       for N seconds (default 3600)
paymesh keys rotate-audit              a new audit key signs checkpoints from now on
paymesh merchants create --name NAME   a new merchant and its test and live secret keys
paymesh operators create --email E --role finance|ops|admin [--password-stdin]
                                       a back-office operator; prints its one-time
                                       password (or takes one on stdin) as JSON
paymesh vault init-keyring             create the local KEK keyring file if missing
paymesh vault rotate-kek               make a new KEK version primary (cards re-wrap online)
paymesh vault check-keys               check that the KEKs at hand unwrap the database's cards
paymesh certs init                     a development CA and mTLS certificates per service
paymesh dev reset --yes                drop and recreate the development database and keyring
paymesh audit verify                   check the audit chains against their signed checkpoints
paymesh audit checkpoint               sign the audit chains' heads now (the services do it too)
paymesh recon run --psp PSP [--from T] [--to T] [--reason WHY]
                                       reconcile a PSP's settled records with the ledger
                                       (default: the last day); prints the run as JSON
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
# `paymesh dev reset` drops only these: make run's database, or one named paymesh_dev…, on
# this machine.
DEV_DATABASE_NAME = "paymesh"
DEV_DATABASE_PREFIX = "paymesh_dev"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def database_url() -> str:
    """The operator's commands (migrations, merchants, audits) go straight to PostgreSQL
    (DATABASE_DIRECT_URL, else DATABASE_URL): DDL and one-off work gain nothing from a
    transaction pooler, and CREATE DATABASE needs no pooler's database list."""
    return (
        os.environ.get("DATABASE_DIRECT_URL")
        or os.environ.get("DATABASE_URL")
        or DEFAULT_DATABASE_URL
    )


def migrate(args: argparse.Namespace) -> int:
    from paymesh.platform import migrations
    from paymesh_ops import services

    unknown = sorted(set(args.services) - set(services.SCHEMAS))
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    migrations.ensure_database(database_url())
    for name in args.services or list(services.SCHEMAS):
        definition = services.SCHEMAS[name]
        migrations.upgrade(database_url(), definition.schema, definition.migrations_dir)
        role = migrations.grant_runtime_role(database_url(), name, definition.schema)
        print(f"migrated {name} (schema {definition.schema}, runtime role {role})")
    return 0


def keys_dir() -> Path:
    return Path(os.environ.get("PAYMESH_KEYS_DIR", "var/keys"))


def key_store():
    """Where the signing keys are kept: PAYMESH_KEYS_DIR, or Secrets Manager when
    PAYMESH_KEYS_SOURCE=aws (as the services read them)."""
    from paymesh.platform.config import key_store as store

    return store(
        os.environ.get("PAYMESH_KEYS_SOURCE", "files"),
        keys_dir(),
        os.environ.get("AWS_REGION", "eu-west-1"),
        os.environ.get("PAYMESH_AWS_SECRETS_ENDPOINT") or None,
        os.environ.get("PAYMESH_AWS_SECRETS_PREFIX", "paymesh/"),
    )


def keys_init(_args: argparse.Namespace) -> int:
    from paymesh.platform.audit_keys import init_audit_key
    from paymesh.platform.service_auth import init_keys
    from paymesh_ops.services import ALL, CLIENTS

    created = init_keys(key_store(), (*ALL, *CLIENTS))
    audit_key = init_audit_key(keys_dir())
    if audit_key:
        created.append(f"audit key {audit_key}")
    print(f"service keys in {keys_dir()}: created {', '.join(created) or 'none (all present)'}")
    return 0


def keys_rotate(args: argparse.Namespace) -> int:
    from paymesh.platform.service_auth import rotate_keys
    from paymesh_ops.services import ALL, CLIENTS

    identities = args.identity or [*ALL, *CLIENTS]
    rotated = rotate_keys(key_store(), identities, args.overlap_seconds)
    print(json.dumps({"rotated": rotated, "old_keys_verify_for_seconds": args.overlap_seconds}))
    return 0


def keys_rotate_audit(_args: argparse.Namespace) -> int:
    from paymesh.platform.audit_keys import add_audit_key

    print(json.dumps({"audit_key": add_audit_key(keys_dir())}))
    return 0


def certs_init(args: argparse.Namespace) -> int:
    from paymesh.platform.tls import init_certs
    from paymesh_ops.services import ALL, CLIENTS, EDGE

    tls_dir = Path(args.dir or os.environ.get("PAYMESH_TLS_DIR") or "var/certs")
    created = init_certs(tls_dir, servers=ALL, clients=(EDGE, *CLIENTS))
    print(f"TLS certificates in {tls_dir}: created {', '.join(created) or 'none (all present)'}")
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


def operators_create(args: argparse.Namespace) -> int:
    from backoffice.operators import InvalidOperator, create_operator
    from backoffice.store import OperatorExists, PostgresStore
    from paymesh.platform.db import create_engine

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None

    async def create():
        engine = create_engine(database_url(), pool_size=1)
        try:
            return await create_operator(
                PostgresStore(engine), args.email, args.role, password, by="cli"
            )
        finally:
            await engine.dispose()

    try:
        operator, given = asyncio.run(create())
    except InvalidOperator as error:
        print(f"paymesh operators create: {error}", file=sys.stderr)
        return 2
    except OperatorExists:
        print(
            f"paymesh operators create: email: {args.email} is an operator already", file=sys.stderr
        )
        return 2
    print(json.dumps({"email": operator.email, "role": operator.role, "password": given}))
    return 0


def vault_init_keyring(_args: argparse.Namespace) -> int:
    from vault_proxy_svc.config import VaultSettings
    from vault_proxy_svc.keys import LocalKeyring

    settings = VaultSettings()
    if settings.kms_provider != "local":
        print(f"VAULT_KMS_PROVIDER is {settings.kms_provider}: no local keyring needed")
        return 0
    created = LocalKeyring.create_file(settings.keyring_file)
    print(f"vault keyring {settings.keyring_file}: {'created' if created else 'present'}")
    return 0


def vault_rotate_kek(_args: argparse.Namespace) -> int:
    from paymesh.platform.db import create_engine
    from vault_proxy_svc.config import VaultSettings
    from vault_proxy_svc.kek import KekManager
    from vault_proxy_svc.keys import build_key_provider

    settings = VaultSettings()

    async def rotate():
        engine = create_engine(settings.session_database_url, pool_size=1)
        try:
            keks = KekManager(engine, build_key_provider(settings))
            await keks.ensure_ready()
            return await keks.rotate(actor="ops:cli")
        finally:
            await engine.dispose()

    previous, primary = asyncio.run(rotate())
    print(json.dumps({"previous": previous, "primary": primary}))
    return 0


def vault_check_keys(_args: argparse.Namespace) -> int:
    from paymesh.platform.db import create_engine
    from vault_proxy_svc.config import VaultSettings
    from vault_proxy_svc.kek import KekManager, KeksUnavailable
    from vault_proxy_svc.keys import build_key_provider

    settings = VaultSettings()

    async def check():
        engine = create_engine(settings.session_database_url, pool_size=1)
        try:
            await KekManager(engine, build_key_provider(settings)).verify_keys()
        finally:
            await engine.dispose()

    try:
        asyncio.run(check())
    except (KeksUnavailable, OSError) as error:
        print(error, file=sys.stderr)
        return 1
    print("vault keys: every KEK version the database uses unwraps its data")
    return 0


def not_a_dev_database(url: str) -> str | None:
    """Why `url` is not a development database that `paymesh dev reset` may drop, or None."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database or ""
    if parsed.host not in LOOPBACK_HOSTS:
        return f"DATABASE_URL points at host {parsed.host!r}, not this machine"
    if name != DEV_DATABASE_NAME and not name.startswith(DEV_DATABASE_PREFIX):
        return (
            f"database {name!r} is not a development database "
            f"({DEV_DATABASE_NAME!r}, or a name starting with {DEV_DATABASE_PREFIX!r})"
        )
    return None


def dev_reset(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from vault_proxy_svc.config import VaultSettings

    url = database_url()
    refused = not_a_dev_database(url)
    if refused:
        print(f"paymesh dev reset: refused, {refused}", file=sys.stderr)
        return 2
    settings = VaultSettings()
    keyring = settings.keyring_file if settings.kms_provider == "local" else None
    doomed = f"database {make_url(url).database!r}"
    if keyring:
        doomed += f" and the vault keyring {keyring}"
    if not args.yes:
        print(f"paymesh dev reset deletes the {doomed}; run it with --yes", file=sys.stderr)
        return 2
    from paymesh.platform import migrations

    migrations.drop_database(url)
    if keyring:
        keyring.unlink(missing_ok=True)
    print(f"deleted the {doomed}")
    code = migrate(argparse.Namespace(services=[]))
    return code or vault_init_keyring(args)


# Every hash-chained audit table, in the order they are checked.
AUDIT_TABLES = (
    "gateway.payment_audit",
    "rebill.rebill_audit",
    "webhook.webhook_audit",
    "backoffice.operator_audit",
)


def audit_verify(_args: argparse.Namespace) -> int:
    from paymesh.platform.audit_chain import first_break
    from paymesh.platform.audit_keys import AuditKeyMissing, AuditKeys
    from paymesh.platform.db import create_engine

    try:
        keys: AuditKeys | None = AuditKeys.load(keys_dir())
    except AuditKeyMissing:
        keys = None  # enough while no table has checkpoints

    async def verify():
        engine = create_engine(database_url(), pool_size=1)
        try:
            for table in AUDIT_TABLES:
                broken = await first_break(engine, table, keys)
                if broken is not None:
                    return broken
            return None
        finally:
            await engine.dispose()

    try:
        broken = asyncio.run(verify())
    except AuditKeyMissing as error:
        print(f"paymesh audit verify: {error}", file=sys.stderr)
        return 2
    if broken is None:
        print(json.dumps({"intact": True}))
        return 0
    print(
        json.dumps(
            {
                "intact": False,
                "table": broken.table,
                "first_broken_row": broken.row_id,
                "merchant_id": broken.merchant_id,
                "chain": broken.chain,
                "problem": broken.problem,
            }
        )
    )
    return 1


def audit_checkpoint(_args: argparse.Namespace) -> int:
    from paymesh.platform.audit_checkpoints import AuditCheckpointer
    from paymesh.platform.audit_keys import AuditKeyMissing, AuditKeys
    from paymesh.platform.db import create_engine

    try:
        keys = AuditKeys.load(keys_dir())
    except AuditKeyMissing as error:
        print(f"paymesh audit checkpoint: {error}", file=sys.stderr)
        return 2

    async def checkpoint() -> dict[str, int]:
        engine = create_engine(database_url(), pool_size=1)
        try:
            return {
                table: await AuditCheckpointer(engine, table, keys, interval=0).checkpoint()
                for table in AUDIT_TABLES
            }
        finally:
            await engine.dispose()

    print(json.dumps({"signed_heads": asyncio.run(checkpoint())}))
    return 0


def recon_run(args: argparse.Namespace) -> int:
    import getpass
    from datetime import UTC, datetime

    from gateway_svc.config import GatewaySettings
    from gateway_svc.reconciliation.runner import Who
    from gateway_svc.service import build_reconciler
    from paymesh.platform.db import create_engine
    from paymesh.platform.problems import PaymeshError

    settings = GatewaySettings()
    who = Who("cli", args.operator or getpass.getuser(), args.reason)

    def moment(value: str | None) -> datetime | None:
        if not value:
            return None
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    async def run():
        engine = create_engine(database_url(), pool_size=2)
        try:
            reconciler = build_reconciler(settings, engine)
            return await reconciler.run(args.psp, moment(args.start), moment(args.end), who)
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(run())
    except PaymeshError as error:
        print(f"paymesh recon run: {error}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "run_id": report.run_id,
                "psp": report.psp,
                "from": report.start.isoformat(),
                "to": report.end.isoformat(),
                "records_checked": report.records_checked,
                "new_mismatches": report.new_mismatches,
                "mismatches": [
                    {"id": m.id, "kind": m.kind, "reference": m.reference}
                    for m in report.mismatches
                ],
            }
        )
    )
    return 0


def ops_token(args: argparse.Namespace) -> int:
    from paymesh.platform.service_auth import TokenIssuer

    key = keys_dir() / "ops.key"
    if not key.exists():
        # Not "run keys init": new keys here would be unknown to the running services.
        where = (
            f"PAYMESH_KEYS_DIR={os.environ['PAYMESH_KEYS_DIR']}"
            if os.environ.get("PAYMESH_KEYS_DIR")
            else f"PAYMESH_KEYS_DIR is unset, so {keys_dir()} is read from the current directory"
        )
        print(
            f"paymesh ops-token: no ops key at {key.resolve()} ({where}): run it in the "
            "directory the services run in (the repository's, for `make run`) or set "
            "PAYMESH_KEYS_DIR to their keys directory",
            file=sys.stderr,
        )
        return 1
    print(TokenIssuer("ops", keys_dir()).token_for(args.audience))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paymesh", description="paymesh ops commands")
    commands = parser.add_subparsers(dest="command", required=True)

    migrate_parser = commands.add_parser("migrate", help="apply database migrations")
    migrate_parser.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help="gateway, vault, rebill, webhook or backoffice",
    )
    migrate_parser.set_defaults(handler=migrate)

    keys = commands.add_parser("keys", help="service signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    keys.add_parser("init", help="create missing key pairs and audit key").set_defaults(
        handler=keys_init
    )
    rotate = keys.add_parser(
        "rotate",
        help="new signing keys; the old ones still verify for the overlap window",
    )
    rotate.add_argument(
        "--identity", action="append", help="an identity to rotate (default: every one)"
    )
    rotate.add_argument(
        "--overlap-seconds",
        type=float,
        default=3600.0,
        help="how long the old public keys still verify (default 3600)",
    )
    rotate.set_defaults(handler=keys_rotate)
    keys.add_parser(
        "rotate-audit", help="add an audit key that signs from now on (keep the old ones)"
    ).set_defaults(handler=keys_rotate_audit)

    certs = commands.add_parser("certs", help="mTLS certificates").add_subparsers(
        dest="certs_command", required=True
    )
    certs_init_parser = certs.add_parser(
        "init", help="a development CA and a certificate per service, Envoy and ops"
    )
    certs_init_parser.add_argument(
        "--dir", help="where to write them (default: PAYMESH_TLS_DIR, else var/certs)"
    )
    certs_init_parser.set_defaults(handler=certs_init)

    merchants = commands.add_parser("merchants", help="merchants and API keys").add_subparsers(
        dest="merchants_command", required=True
    )
    create = merchants.add_parser("create", help="create a merchant; prints its keys as JSON")
    create.add_argument("--name", required=True)
    create.set_defaults(handler=merchants_create)

    operators = commands.add_parser("operators", help="back-office operators").add_subparsers(
        dest="operators_command", required=True
    )
    operator_create = operators.add_parser(
        "create", help="create an operator; prints its email, role and password as JSON"
    )
    operator_create.add_argument("--email", required=True)
    operator_create.add_argument("--role", required=True, choices=["finance", "ops", "admin"])
    operator_create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin's first line instead of generating one",
    )
    operator_create.set_defaults(handler=operators_create)

    vault = commands.add_parser("vault", help="vault key management").add_subparsers(
        dest="vault_command", required=True
    )
    vault.add_parser("init-keyring", help="create the local keyring").set_defaults(
        handler=vault_init_keyring
    )
    vault.add_parser("rotate-kek", help="make a new KEK version primary").set_defaults(
        handler=vault_rotate_kek
    )
    vault.add_parser(
        "check-keys", help="check that the KEKs at hand unwrap the database's data"
    ).set_defaults(handler=vault_check_keys)

    dev = commands.add_parser("dev", help="the development setup").add_subparsers(
        dest="dev_command", required=True
    )
    reset = dev.add_parser(
        "reset", help="drop and recreate the development database and the vault keyring"
    )
    reset.add_argument("--yes", action="store_true", help="really delete them")
    reset.set_defaults(handler=dev_reset)

    audit = commands.add_parser("audit", help="audit trails (payments and rebills)").add_subparsers(
        dest="audit_command", required=True
    )
    audit.add_parser(
        "verify", help="verify the hash chains and their signed checkpoints"
    ).set_defaults(handler=audit_verify)
    audit.add_parser("checkpoint", help="sign every chain's head now").set_defaults(
        handler=audit_checkpoint
    )

    recon = commands.add_parser(
        "recon", help="reconciliation of the PSPs' records with the ledger"
    ).add_subparsers(dest="recon_command", required=True)
    recon_run_parser = recon.add_parser("run", help="reconcile one PSP's period now")
    recon_run_parser.add_argument("--psp", required=True, help="sandbox or stripe")
    recon_run_parser.add_argument(
        "--from", dest="start", help="ISO time with offset (default: a day before --to)"
    )
    recon_run_parser.add_argument("--to", dest="end", help="ISO time with offset (default: now)")
    recon_run_parser.add_argument("--operator", default="", help="who runs it (default: $USER)")
    recon_run_parser.add_argument("--reason", default="", help="why, for the audit row")
    recon_run_parser.set_defaults(handler=recon_run)

    token = commands.add_parser("ops-token", help="a service token for admin RPCs")
    token.add_argument("--audience", default="gateway")
    token.set_defaults(handler=ops_token)

    args = parser.parse_args(argv)
    # Logs go to stderr as JSON, so stdout carries only the command's answer.
    configure_logging("cli", os.environ.get("LOG_LEVEL", "INFO"), stream=sys.stderr)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
