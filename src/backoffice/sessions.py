"""Operators' sessions and CSRF tokens. The cookie holds a random id; the table only its
sha256 digest. A session ends after `idle` without a request and `absolute` after sign-in,
whichever comes first. Every POST carries the session's CSRF token; the sign-in form, before
any session exists, carries the token of a short-lived pre-session cookie (double submit)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from backoffice.store import Operator, Session, Store

SESSION_COOKIE = "bo_session"
LOGIN_CSRF_COOKIE = "bo_login_csrf"
# last_seen_at is written at most this often (a page load is several requests).
TOUCH_EVERY = timedelta(seconds=30)


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(expected, given or "")


@dataclass(frozen=True)
class SignedIn:
    operator: Operator
    session: Session


@dataclass(frozen=True)
class Lifetimes:
    idle: timedelta
    absolute: timedelta

    def expired(self, session: Session, now: datetime) -> bool:
        return now - session.last_seen_at > self.idle or now - session.created_at > self.absolute


async def start(store: Store, operator: Operator, now: datetime) -> tuple[str, Session]:
    """A new session for `operator`: the cookie's value and the stored session."""
    session_id = new_token()
    session = Session(digest(session_id), operator.email, new_token(), now, now)
    await store.add_session(session)
    return session_id, session


async def resume(
    store: Store, session_id: str | None, lifetimes: Lifetimes, now: datetime
) -> SignedIn | None:
    """The operator signed in under `session_id`, or None (unknown, expired, or the
    operator is gone); an expired session is ended."""
    if not session_id:
        return None
    session = await store.session(digest(session_id))
    if session is None:
        return None
    if lifetimes.expired(session, now):
        await store.end_session(session.digest)
        return None
    operator = await store.operator(session.email)
    if operator is None:
        await store.end_session(session.digest)
        return None
    if now - session.last_seen_at >= TOUCH_EVERY:
        await store.touch_session(session.digest, now)
    return SignedIn(operator, session)
