"""The schema: one Alembic history that builds the ORM's tables on SQLite and PostgreSQL, and a check
that fails when a table changes without a migration."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.store.db import make_engine
from app.store.tables import Base
from tests.stack import ROOT, create_pg_database, drop_pg_database, pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        name = create_pg_database()
        yield pg_url(name)
        drop_pg_database(name)


def alembic(url: str, verb: str, target: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    getattr(command, verb)(config, target)


def test_migrations_match_the_orm(database_url):
    alembic(database_url, "upgrade", "head")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == [], f"the ORM and the migrations differ; add a migration: {diff}"
    assert set(Base.metadata.tables) <= tables
    alembic(database_url, "downgrade", "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    alembic(database_url, "upgrade", "head")
    engine.dispose()
