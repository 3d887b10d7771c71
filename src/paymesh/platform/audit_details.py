"""Large audit payloads, stored compressed. An audit row's `details` larger than a size
(AUDIT_COMPRESS_ABOVE_BYTES, 4 KiB by default) are stored as zlib-compressed JSON in its
`details_z` column, and `details` holds a small stub that says so ({"compressed": "zlib",
"bytes": <the JSON's size>}). The chain's digest covers `details_z` as stored
(migration_ops.compress_chained_audit), so a change to the compressed bytes breaks the chain
as a change to any other column does. Readers take `read_details(details, details_z)`."""

from __future__ import annotations

import json
import zlib
from typing import Any

DEFAULT_COMPRESS_ABOVE_BYTES = 4096
_compress_above = DEFAULT_COMPRESS_ABOVE_BYTES


def configure(compress_above_bytes: int) -> None:
    """This process's threshold (the service's settings, at start); 0: never compress."""
    global _compress_above
    _compress_above = compress_above_bytes


def stored_details(
    details: dict[str, Any], above: int | None = None
) -> tuple[dict[str, Any], bytes | None]:
    """The `details` and `details_z` columns that store `details`: as they are, or, when
    their JSON is larger than `above` bytes (this process's threshold by default),
    compressed."""
    limit = _compress_above if above is None else above
    if not limit:
        return details, None
    text = json.dumps(details, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) <= limit:
        return details, None
    return {"compressed": "zlib", "bytes": len(text)}, zlib.compress(text, 6)


def read_details(details: dict[str, Any], details_z: bytes | memoryview | None) -> Any:
    """The details a row was written with."""
    if details_z is None:
        return details
    return json.loads(zlib.decompress(bytes(details_z)))
