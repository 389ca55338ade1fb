"""One settings object, read from the environment (`SQUEEZE_*`). The defaults are the embedded
single-machine deployment: a SQLite file, a local blob directory and a broker that needs no server,
all under `SQUEEZE_HOME` (./var)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SQUEEZE_", extra="ignore")

    home: Path = Field(Path("var"), description="where the embedded defaults keep their files")
    database_url: str = ""  # default: sqlite:///{home}/squeeze.db
    broker_url: str = ""  # default: sqla+sqlite:///{home}/broker.db (kombu's SQLAlchemy transport)
    blob_dir: Path | None = None  # default: {home}/blobs (with an S3 store: this machine's cache)
    blob_url: str = ""  # "" = the local blob_dir; "s3://bucket/prefix" = an S3-compatible store
    s3_endpoint_url: str | None = None  # MinIO, Ceph, ...; credentials: the usual AWS_* variables
    s3_region: str = "us-east-1"
    bootstrap_api_key: str | None = None  # the `default` tenant's key at first start; random if unset

    # the proxies in front of the API whose X-Forwarded-For is believed (comma-separated addresses or CIDRs,
    # "*" for any): none by default, so the address a client connects from is its address
    trusted_proxies: str = ""
    max_connections: int = Field(2000, ge=10)  # open at once per API process; more are answered 503
    header_timeout_s: float = Field(10.0, gt=0)  # a request's line and headers must arrive whole within this
    body_timeout_s: float = Field(30.0, gt=0)  # a request body that sends nothing for this long is cut off
    max_upload_bytes: int = 4 * 1024**3
    requests_per_minute_per_key: int = Field(1200, ge=1)  # per API process; more answers 429 with Retry-After
    auth_failures_per_minute: int = Field(30, ge=1)  # missing or wrong keys from one address, per API process
    max_json_bytes: int = 1024 * 1024  # a job's JSON body (a recipe is a few KB); more answers 413
    max_active_jobs_per_tenant: int = 100  # queued + running; more answers 429
    # a tenant's jobs running at once, over all workers; its other jobs wait while other tenants' run
    max_running_jobs_per_tenant: int = Field(4, ge=1)
    max_pending_inspections_per_tenant: int = Field(10, ge=1)  # uploads not yet inspected; more answers 429
    # long requests a tenant may have open at once, per API process (each holds a connection, never a
    # database session); more answers 429 with Retry-After
    max_uploads_in_flight_per_tenant: int = Field(4, ge=1)
    max_event_streams_per_tenant: int = Field(8, ge=1)
    db_pool_timeout_s: float = Field(5.0, gt=0)  # a request waits this long for a database connection, then 503
    upload_chunk_bytes: int = 1024 * 1024
    stale_upload_s: int = 900  # a partial upload nothing wrote to for this long is removed (startup, sweeps)

    # what one tenant may keep: models, datasets, artifacts and job logs together; more answers 413 on upload
    # and 429 on a new job (code quota_exceeded), until something is deleted
    storage_quota_bytes_per_tenant: int = Field(100 * 1024**3, ge=0)
    # a job's messages in the shared store (its event stream), over all its attempts; more are dropped and the
    # stream says "output truncated" (workers/event_budget.py)
    job_event_bytes: int = Field(1024**2, ge=1024)
    job_log_lines: int = Field(2000, ge=1)
    job_log_lines_per_s: float = Field(20.0, gt=0)
    child_log_bytes: int = Field(8 * 1024**2, ge=64 * 1024)  # a job child's stderr on the worker's disk, kept tail

    # jobs (read by workers)
    # every inspection and job child runs in a bubblewrap sandbox; "off" only by an operator's explicit choice
    sandbox: Literal["bwrap", "off"] = "bwrap"
    sandbox_disk_mb: int = 20_480  # what a job may write (artifacts, checkpoints); also the largest artifact
    sandbox_tmp_mb: int = 2048  # its private /tmp (a tmpfs: memory)
    sandbox_processes: int = 1024  # processes and threads of one job
    # each tenant's compiler cache on a worker (inductor's kernels): a tenant's next job skips compiles it has
    # done before; never shared between tenants. 0 turns it off
    compile_cache_mb: int = Field(1024, ge=0)
    inspect_time_limit_s: int = 600  # a worker stops an upload's inspection after this long
    job_time_limit_s: int = 4 * 3600
    job_memory_limit_mb: int = 0  # resident memory of a job's child process; 0 = 80 % of the machine
    job_max_attempts: int = 3  # runs of one job when workers die under it
    heartbeat_interval_s: float = 5.0
    heartbeat_timeout_s: float = 60.0  # a running job silent this long has lost its worker
    sweep_interval_s: float = 10.0
    worker_queues: str = "auto"  # "auto": cpu, plus gpu on a machine with CUDA
    worker_concurrency: int = 1  # jobs at a time per worker; each job uses all `threads`
    threads: int | None = None  # torch/onnxruntime threads inside a job; default: all cores

    # measurement (the engine's MeasureSettings)
    measure_batch: int = 32
    measure_seconds: float = 2.0
    measure_max_rounds: int = 40  # while an interval is wider than 1.15x
    measure_runtime_baselines: bool = True  # time the original fp32 on each other runtime an artifact uses
    measure_rounds: int = 8  # at least; more while an interval is wide (docs/measurement.md)
    measure_eval_samples: int = 2048

    # callbacks to private, loopback, link-local, CGNAT or metadata addresses: refused unless opted in (a laptop)
    webhook_allow_private: bool = False
    webhook_timeout_s: float = 10.0
    webhook_max_attempts: int = 6  # back-off 2, 4, 8, ... seconds between attempts

    # the bearer token Prometheus scrapes /metrics with; unset, /metrics is off (it counts every tenant's jobs)
    metrics_token: str | None = None

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        home = self.home.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{home / 'squeeze.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{home / 'broker.db'}"
        if self.blob_dir is None:
            self.blob_dir = home / "blobs"
        if self.blob_url and not self.blob_url.startswith("s3://"):
            raise ValueError("SQUEEZE_BLOB_URL is empty (local blobs) or s3://bucket/prefix")
        if self.job_memory_limit_mb <= 0:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            self.job_memory_limit_mb = int(total * 0.8) >> 20
        return self

    @property
    def is_embedded_db(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_dirs(self) -> None:
        # private to the service's user: blob files are world-readable so a job's sandbox can read its own
        # inputs through a bind mount, which is safe only while nobody else can walk into the folder
        for folder in (self.home, self.blob_dir):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)


@lru_cache
def get_settings() -> Settings:
    return Settings()
