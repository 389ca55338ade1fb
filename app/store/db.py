"""The SQL store: engine, sessions, the declarative base, ids and timestamps shared by every table."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import DateTime, Engine, create_engine, event, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import SingletonThreadPool
from sqlalchemy.types import TypeDecorator

from .config import get_settings


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on the way out, whatever the backend stores (SQLite keeps naive strings)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if value is not None and dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """`mdl_0193a8c1f2e4a1b2c3d4e5f6`: a millisecond timestamp then randomness, so ids sort by creation
    time and serve as pagination cursors."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_timeout=get_settings().db_pool_timeout_s,
            # as many as the API's thread pool runs at once (anyio's 40): a smaller pool under a burst of
            # polls opened and closed an overflow connection (and its PRAGMAs) for most requests
            pool_size=20,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            # WAL: the API reads while a worker writes; foreign keys are off by default in SQLite
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_timeout=get_settings().db_pool_timeout_s
    )


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def loop_engine() -> Engine | None:
    """On SQLite (the embedded default), a read-only connection per thread for the few reads the API makes in
    its event loop (the job poll's stamp): a WAL reader never waits for a writer, and a local indexed read
    costs less than the hop to the thread pool (measured in bench/reads.py). Its own pool, so a read in the
    loop can never wait for a connection the thread pool holds; a short busy timeout, so in the rare case a
    read is refused (WAL recovery) the caller falls back to the thread pool instead of stalling the loop.
    None on a networked database: its reads belong in the thread pool."""
    url = get_settings().database_url
    path = make_url(url).database if url.startswith("sqlite") else None
    if path in (None, "", ":memory:"):
        return None  # (an in-memory database is one per connection: not shareable)
    # opened read-write but never created (mode=rw): before the database exists a read fails and falls back
    read_url = f"sqlite:///file:{quote(str(Path(path).resolve()))}?mode=rw&uri=true"
    engine = create_engine(read_url, connect_args={"check_same_thread": False}, poolclass=SingletonThreadPool)

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=100")
        cur.execute("PRAGMA query_only=ON")
        cur.close()

    return engine


@lru_cache
def session_factory() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error (workers and scripts)."""
    with session_factory()() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
