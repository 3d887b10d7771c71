"""The back office's tables (migrations/ creates them)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text

from backoffice import SCHEMA
from paymesh.platform.audit_chain import chained_audit_table

metadata = MetaData(schema=SCHEMA)

operators = Table(
    "operators",
    metadata,
    Column("email", String(254), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
)

# merchant_id holds the chain's name: the merchant an action concerned, else `backoffice`.
operator_audit = chained_audit_table(metadata, "operator_audit")
