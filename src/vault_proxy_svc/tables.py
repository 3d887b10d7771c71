"""vault_proxy_svc's tables, all in the `vault` schema."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, MetaData, SmallInteger, String, Table, func

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
)

outbox = outbox_table(metadata, SCHEMA)
