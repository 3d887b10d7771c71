"""vault_proxy_svc's tables, all in the `vault` schema. Card numbers exist here only as
AES-GCM ciphertext; CVCs never."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from paymesh.platform.idempotency.table import idempotency_keys_table
from paymesh.platform.outbox import outbox_table

SCHEMA = "vault"
metadata = MetaData(schema=SCHEMA)

payment_methods = Table(
    "payment_methods",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("brand", String(16), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("exp_month", SmallInteger, nullable=False),
    Column("exp_year", SmallInteger, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Envelope: NULL once detached (the wrapped data key is destroyed: crypto-shredding).
    Column("kek_version", Text),
    Column("wrapped_key", LargeBinary),
    Column("nonce", LargeBinary),
    Column("ciphertext", LargeBinary),
    Column("billing_details", JSONB),
    Column("detached_at", DateTime(timezone=True)),
)

kek_versions = Table(
    "kek_versions",
    metadata,
    Column("version", Text, primary_key=True),
    Column("provider", String(16), nullable=False),
    Column("is_primary", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Vault-wide secrets (the fingerprint key), wrapped by a KEK like card data keys.
secrets = Table(
    "secrets",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("kek_version", Text, nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

psp_tokens = Table(
    "psp_tokens",
    metadata,
    Column("payment_method", String(40), primary_key=True),
    Column("psp", String(20), primary_key=True),
    Column("psp_reference", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Idempotency keys of tokenize and detach, per merchant and mode. `key` and `request_hash`
# are HMACs: the requests hold card numbers, a caller's key may be one, and nothing here may.
idempotency_keys = idempotency_keys_table(metadata)

vault_audit = Table(
    "vault_audit",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", Text, nullable=False),
    Column("action", String(40), nullable=False),
    Column("payment_method", String(40)),
    Column("merchant_id", String(40)),
    Column("reason", Text),
    Column("result", String(20), nullable=False),
    Column("details", JSONB, nullable=False),
)

outbox = outbox_table(metadata, SCHEMA)
