"""gateway_svc's tables, all in the `gateway` schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from paymesh.platform.outbox import outbox_table

SCHEMA = "gateway"
metadata = MetaData(schema=SCHEMA)

payment_intents = Table(
    "payment_intents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(32), nullable=False),
    Column("capture_method", String(16), nullable=False),
    Column("amount_capturable", BigInteger, nullable=False, server_default=text("0")),
    Column("amount_received", BigInteger, nullable=False, server_default=text("0")),
    Column("amount_refunded", BigInteger, nullable=False, server_default=text("0")),
    Column("payment_method", String(40)),
    Column("psp", String(20)),
    Column("description", Text),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("last_payment_error", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

merchants = Table(
    "merchants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("merchant_id", String(40), ForeignKey("gateway.merchants.id"), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("last4", String(4), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)

outbox = outbox_table(metadata, SCHEMA)
