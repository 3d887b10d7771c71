"""Where each kind of connection goes: the data path on DATABASE_URL (perhaps a pgbouncer in
transaction mode), session state on DATABASE_DIRECT_URL, server-side prepared statements only
where a session is the client's own, and a name on every connection."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from paymesh.platform.config import ServiceSettings
from paymesh.platform.db import create_engine, create_session_engine, named, psycopg_conninfo

DIRECT = "postgresql://postgres@db:5432/paymesh"
POOLED = "postgresql://postgres@pgbouncer:6432/paymesh"
SETTINGS = (
    "DATABASE_URL",
    "DATABASE_DIRECT_URL",
    "DB_PREPARED_STATEMENTS",
    "DB_POOL_SIZE",
    "DB_POOL_KEEP",
    "DB_POOL_IDLE_SECONDS",
)


@pytest.fixture
def settings(monkeypatch):
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)

    def make(**env: str) -> ServiceSettings:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return ServiceSettings(grpc_port=1, http_port=2)

    return make


def test_session_connections_go_to_the_data_path_unless_a_direct_url_is_given(settings):
    assert settings(DATABASE_URL=DIRECT).session_database_url == DIRECT
    assert settings(DATABASE_URL=DIRECT, DATABASE_DIRECT_URL="").session_database_url == DIRECT
    behind = settings(DATABASE_URL=POOLED, DATABASE_DIRECT_URL=DIRECT)
    assert (behind.database_url, behind.session_database_url) == (POOLED, DIRECT)


def test_prepared_statements_are_off_behind_a_pooler_unless_asked_for(settings):
    assert settings(DATABASE_URL=DIRECT).prepared_statements
    assert settings(DATABASE_URL=DIRECT, DATABASE_DIRECT_URL=DIRECT).prepared_statements
    assert not settings(DATABASE_URL=POOLED, DATABASE_DIRECT_URL=DIRECT).prepared_statements
    asked = settings(DATABASE_URL=POOLED, DATABASE_DIRECT_URL=DIRECT, DB_PREPARED_STATEMENTS="1")
    assert asked.prepared_statements  # a pgbouncer with max_prepared_statements (1.21+)
    refused = settings(DATABASE_URL=DIRECT, DB_PREPARED_STATEMENTS="false")
    assert not refused.prepared_statements


def test_pool_settings_have_defaults_and_refuse_nonsense(settings):
    defaults = settings()
    assert (defaults.db_pool_size, defaults.db_pool_keep, defaults.db_pool_idle_seconds) == (
        10,
        2,
        10.0,
    )
    with pytest.raises(ValueError, match="DB_POOL_KEEP"):
        settings(DB_POOL_KEEP="0")


def test_every_connection_names_its_process_unless_the_url_names_one():
    assert make_url(named(DIRECT, "gateway")).query["application_name"] == "gateway"
    own = f"{DIRECT}?application_name=mine"
    assert named(own, "gateway") == own
    assert named(DIRECT, None) == DIRECT


def test_the_pools_keep_few_connections_and_prepare_only_when_told():
    engine = create_engine(named(POOLED, "gateway"), 10, keep=2, prepare=False)
    assert (engine.pool.size(), engine.pool._max_overflow) == (2, 8)  # type: ignore[attr-defined]
    assert "application_name=gateway" in psycopg_conninfo(engine)
    assert engine.dialect.create_connect_args(engine.url)[1]["application_name"] == "gateway"
    session = create_session_engine(named(DIRECT, "gateway:session"))
    assert make_url(psycopg_conninfo(session)).query["application_name"] == "gateway:session"
    assert make_url(psycopg_conninfo(session)).host == "db"
