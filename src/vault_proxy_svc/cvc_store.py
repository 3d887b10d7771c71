"""CVCs wait here, in this process's memory only, while the card is created at the PSPs: read
for each PSP's creation, dropped once every configured PSP holds the card (see
CardProvisioning._forget_cvc_once_everywhere) and after a few minutes either way. Never
written to disk or logs."""

from __future__ import annotations

import time


class CvcStore:
    def __init__(self, ttl_seconds: float, max_entries: int = 100_000):
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._entries: dict[str, tuple[str, float]] = {}

    def put(self, token: str, cvc: str) -> None:
        if not cvc:
            return
        self._evict_expired()
        if len(self._entries) < self._max_entries:
            self._entries[token] = (cvc, time.monotonic() + self._ttl)

    def peek(self, token: str) -> str | None:
        """The CVC, left in place for the other PSPs (None once dropped or expired)."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            del self._entries[token]
            return None
        return entry[0]

    def drop(self, token: str) -> None:
        self._entries.pop(token, None)

    def _evict_expired(self) -> None:
        now = time.monotonic()
        # Insertion order is expiry order (one TTL for all): drop from the front until the
        # first live entry, without walking the rest.
        while self._entries:
            token, (_, expires) = next(iter(self._entries.items()))
            if expires >= now:
                return
            del self._entries[token]
