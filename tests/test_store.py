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


def _report_v0() -> dict:
    """A report as rows written before reports carried a version: today's shape without `schema_version`."""
    from workers.compression.contract.inspection import InputInfo
    from workers.compression.contract.measure import Latency, Measurement
    from workers.compression.contract.report import Final, Report, StepReport

    m = Measurement(
        size_bytes=100, params=10, nonzero_params=10, macs=None, latency_ms=Latency(b1=None, bN=None, batch=8),
        throughput_per_s=None, peak_mem_bytes=None, accuracy=0.9, agreement=None, agreement_metric=None,
        cosine_similarity=None, device="cpu", runtime="eager",
    )
    step = StepReport(
        method="quantize", artifact_id="art_1", format="pt2", measurement=m, size_ratio=2.0, speedup_b1=1.5,
        speedup_bN=1.5, verdict="faster_and_smaller", verdict_reason="measured",
    )
    final = Final(
        artifact_id="art_1", size_ratio=2.0, speedup_b1=1.5, speedup_bN=1.5, accuracy_delta=0.0, agreement=1.0,
        verdict="faster_and_smaller", verdict_reason="measured",
    )
    report = Report(baseline=m, steps=[step], final=final, input=InputInfo(shape=[None, 1, 8, 8], dtype="float32"))
    return report.model_dump(mode="json", exclude={"schema_version"})


def test_stored_json_from_before_versions_reads_typed_after_the_migration(database_url):
    """Migration 0006 brings every stored recipe, report and inspection to the current shape, so the API reads
    them as the contract's types with no plain-dict fallback; downgrading takes the marks off again."""
    import json

    from sqlalchemy import text

    from app.datasets.schemas import DatasetOut
    from app.jobs.schemas import JobOut
    from app.models.schemas import ModelOut

    alembic(database_url, "upgrade", "0005")
    engine = make_engine(database_url)
    now = "2026-01-01 00:00:00"
    model_info = {"format": "pt2", "runtime": "eager", "size_bytes": 1, "params": 1, "nonzero_params": 1,
                  "layers": [{"name": "fc", "type": "Linear", "in": 4, "out": 2}]}
    rows = {
        "tenants": {"id": "ten_1", "name": "t", "webhook_secret": "s", "created_at": now},
        "models": {"id": "mdl_1", "tenant_id": "ten_1", "name": "m", "status": "ready", "format": "pt2", "sha256": "a",
                   "size_bytes": 1, "blob_key": "k", "info": json.dumps(model_info), "load_options": "{}",
                   "created_at": now, "updated_at": now},
        "datasets": {"id": "dst_1", "tenant_id": "ten_1", "name": "d", "status": "ready", "format": "npz", "sha256": "b",
                     "size_bytes": 1, "blob_key": "k2", "info": json.dumps({"samples": 3, "labels": False}),
                     "created_at": now, "updated_at": now},
    }
    recipe = json.dumps({"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]})
    job = {"tenant_id": "ten_1", "model_id": "mdl_1", "recipe": recipe, "device": "cpu", "queue": "cpu",
           "progress": 1.0, "attempts": 1, "cancel_requested": False, "created_at": now, "updated_at": now}
    with engine.begin() as conn:
        for table, row in rows.items():
            conn.execute(text(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})"), row)
        for job_id, status, results in (("job_1", "succeeded", _report_v0()), ("job_2", "cancelled", {})):
            row = {**job, "id": job_id, "status": status, "results": json.dumps(results)}
            conn.execute(text(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})"), row)

    alembic(database_url, "upgrade", "head")
    from sqlalchemy.orm import Session

    from app.store.tables import Dataset, Job, Model

    with Session(engine) as session:
        done = JobOut.of(session.get(Job, "job_1"))
        assert done.results.schema_version == 1 and done.results.final.speedup_b1 == 1.5
        assert done.recipe.schema_version == 1 and done.recipe.steps[0].scheme == "int8_dynamic"
        assert JobOut.of(session.get(Job, "job_2")).results.schema_version == 1  # the cancelled search's {}
        assert ModelOut.of(session.get(Model, "mdl_1")).info.layers[0].in_ == 4
        assert DatasetOut.of(session.get(Dataset, "dst_1")).info.samples == 3
    alembic(database_url, "downgrade", "0005")
    with engine.connect() as conn:
        stored, info = (
            conn.execute(text(f"SELECT {column} FROM {table} WHERE id = :id"), {"id": row_id}).scalar_one()
            for table, column, row_id in (("jobs", "results", "job_1"), ("models", "info", "mdl_1"))
        )
    stored, info = (v if isinstance(v, dict) else json.loads(v) for v in (stored, info))  # PostgreSQL parses JSON
    assert "schema_version" not in stored and "kind" not in info
    engine.dispose()
