"""The table a service keeps its idempotency keys in, in its own schema. Its migration makes
it with `paymesh.platform.migration_ops.create_idempotency_keys`."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    text,
)


def idempotency_keys_table(metadata: MetaData) -> Table:
    return Table(
        "idempotency_keys",
        metadata,
        Column("merchant_id", String(40), primary_key=True),
        Column("livemode", Boolean, primary_key=True),
        Column("key", String(255), primary_key=True),  # keys.key_digest, never the key as sent
        Column("request_hash", String(64), nullable=False),  # keys.request_digest
        Column("state", String(10), nullable=False),  # running | done | released
        # A google.rpc.Status (is_error), or the answer of an RPC that makes no object.
        Column("response", LargeBinary),
        Column("is_error", Boolean, nullable=False, server_default=text("false")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        # When the holder claimed the key: the claim's fence.
        Column("locked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("object_id", String(40)),  # what the request made or changed
    )
