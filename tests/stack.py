"""Starts the real service for tests: the API (`python -m app.serve`, as `make run` does), Celery worker
processes (`python -m workers.main`), on PostgreSQL + Redis or on the embedded defaults. Nothing is
mocked; every process is a real one that the test can kill."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("SQUEEZE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SQUEEZE_TEST_REDIS", "redis://127.0.0.1:6379")



def threads_per_process() -> int:
    """Threads for one test process's models, its stacks' jobs included: its share of the cores. Two test
    processes of 2 threads each on 2 cores (4 busy threads: torch's OpenMP workers spin while they wait) ran
    tests/test_quantize.py and test_distill.py in 117-154 s; of 1 thread each, in 46-48 s. A process alone
    (the exclusive tests) gets every core. SQUEEZE_TEST_THREADS overrides it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return int(os.environ.get("SQUEEZE_TEST_THREADS", max(1, len(os.sched_getaffinity(0)) // workers)))


# fast, deterministic settings for tests: short timing, quick failure detection
TEST_ENV = {
    "SQUEEZE_MEASURE_SECONDS": "0.1",
    "SQUEEZE_WEBHOOK_ALLOW_PRIVATE": "true",
    # the whole suite calls from 127.0.0.1, wrong keys included; test_service_ops checks the real limits
    "SQUEEZE_AUTH_FAILURES_PER_MINUTE": "100000",
    "SQUEEZE_REQUESTS_PER_MINUTE_PER_KEY": "100000",  # the tests' webhook receivers listen on 127.0.0.1
    "SQUEEZE_MEASURE_ROUNDS": "3",
    # tests check behaviour: few extra rounds, and no fp32 reference compiles (the engine tests cover them)
    "SQUEEZE_MEASURE_MAX_ROUNDS": "6",
    "SQUEEZE_MEASURE_RUNTIME_BASELINES": "false",
    "SQUEEZE_MEASURE_EVAL_SAMPLES": "256",
    "SQUEEZE_HEARTBEAT_INTERVAL_S": "1",
    "SQUEEZE_HEARTBEAT_TIMEOUT_S": "8",
    "SQUEEZE_SWEEP_INTERVAL_S": "1",
    "SQUEEZE_THREADS": str(threads_per_process()),
    "SQUEEZE_LOG_LEVEL": "INFO",
    "SQUEEZE_METRICS_TOKEN": "test-metrics-token",
}
METRICS_TOKEN = TEST_ENV["SQUEEZE_METRICS_TOKEN"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_pg_database() -> str:
    """A fresh database for this test session; fails loudly if PostgreSQL is not reachable."""
    import psycopg

    name = f"squeeze_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as e:
        raise RuntimeError(f"PostgreSQL is required for these tests and is not reachable at {PG_ADMIN_URL}: {e}")
    return name


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"


def xdist_worker() -> int:
    """Which pytest-xdist worker runs this test process (0 when the suite runs in one process)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


def redis_db_url(db: int) -> str:
    """A Redis database for this session, emptied first; fails loudly if Redis is not reachable. The suite
    names three (11, 13, 14); parallel test processes each get their own three of Redis's 16: up to 5."""
    import redis

    slots = {11: 0, 13: 1, 14: 2}
    worker = xdist_worker()
    if worker > 4:
        raise RuntimeError("the service tests run in at most 5 parallel processes: one Redis, 16 dbs, 3 each")
    db = 1 + 3 * worker + slots[db]
    client = redis.Redis.from_url(f"{REDIS_URL}/{db}", socket_connect_timeout=5)
    try:
        client.flushdb()
    except redis.ConnectionError as e:
        raise RuntimeError(f"Redis is required for these tests and is not reachable at {REDIS_URL}: {e}")
    return f"{REDIS_URL}/{db}"


class S3Server:
    """A local S3-compatible server (moto) with one bucket, for the blob store on the production stack."""

    def __init__(self, home: Path, bucket: str = "squeeze-test"):
        self.port, self.bucket = free_port(), bucket
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=open(home / "s3.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        self.env = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "SQUEEZE_BLOB_URL": f"s3://{bucket}/blobs",
            "SQUEEZE_S3_ENDPOINT_URL": self.url,
        }
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client().create_bucket(Bucket=bucket)
                break
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"the S3 server did not start: {(home / 's3.log').read_text()[-2000:]}")
                time.sleep(0.3)

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
        )

    def has(self, sha256: str) -> bool:
        found = self.client().list_objects_v2(Bucket=self.bucket, Prefix=f"blobs/sha256/{sha256[:2]}/{sha256}")
        return found.get("KeyCount", 0) > 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Stack:
    def __init__(self, home: Path, env: dict[str, str], api_key: str | None = None):
        self.home = home
        self.env = {**os.environ, **TEST_ENV, "SQUEEZE_HOME": str(home), **env}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.api: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- processes

    def start_api(self, with_worker: bool = False, timeout: float = 90, probe: str | None = None) -> None:
        # /readyz is 503 until a worker beats: an API started alone is up once /healthz answers
        probe = probe or ("/readyz" if with_worker else "/healthz")
        args = [sys.executable, "-m", "app.serve", "--port", str(self.port)] + ([] if with_worker else ["--no-worker"])
        self.api_log = self.logs / "api.log"
        self.api = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=open(self.api_log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited: {self.api_log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}{probe}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the API did not become ready: {self.api_log.read_text()[-3000:]}")

    def start_worker(self, name: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.Popen:
        log = self.logs / f"worker-{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.main", "--name", f"{name}@test"],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers[name] = proc  # registered first, so stop() ends it even if it never gets ready
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = log.read_bytes()[offset:].decode("utf-8", "replace")
            if " ready." in text:
                return proc
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited: {text[-3000:]}")
            time.sleep(0.3)
        raise RuntimeError(f"worker {name} did not become ready")

    def worker_pids(self, name: str) -> list[int]:
        import psutil

        main = psutil.Process(self.workers[name].pid)
        return [main.pid] + [p.pid for p in main.children(recursive=True)]

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and its pool processes: a machine that dies mid-job."""
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        for name in list(self.workers):
            self.stop_worker(name)
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()
            try:
                self.api.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if self.api is not None:
            deadline = time.monotonic() + 30  # the worker app.serve started stops with it
            while time.monotonic() < deadline and _group_alive(self.api.pid):
                time.sleep(0.2)
            if _group_alive(self.api.pid):
                os.killpg(self.api.pid, signal.SIGKILL)
            self.api.wait()

    def admin(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "app.admin", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def sql(self, query: str, *params) -> list[tuple]:
        """Rows straight from the stack's PostgreSQL database (to check what the API does not show)."""
        import psycopg

        with psycopg.connect(self.env["SQUEEZE_DATABASE_URL"].replace("+psycopg", "")) as conn:
            return conn.execute(query, params).fetchall()

    # ---------------------------------------------------------------- HTTP

    def client(self, api_key: str | None = None) -> httpx.Client:
        key = self.api_key if api_key is None else api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        client.stack_logs = self.logs  # what a timed-out wait prints: the processes' own account
        return client


def log_tails(logs: Path | None, chars: int = 3000) -> str:
    if logs is None:
        return ""
    return "".join(
        f"\n--- {log.name} (last {chars} characters) ---\n{log.read_bytes()[-chars:].decode('utf-8', 'replace')}"
        for log in sorted(logs.glob("*.log"))
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def upload(client: httpx.Client, kind: str, path: Path, **fields) -> httpx.Response:
    data = {k: (json.dumps(v) if not isinstance(v, str) else v) for k, v in fields.items()}
    with open(path, "rb") as f:
        return client.post(f"/v1/{kind}", files={"file": (path.name, f)}, data=data)


def wait_for(client: httpx.Client, path: str, done, timeout: float = 180, every: float = 0.25) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            tails = log_tails(getattr(client, "stack_logs", None))
            raise AssertionError(f"timed out waiting on {path}: {json.dumps(body)[:2000]}{tails}")
        time.sleep(every)


def wait_ready(client: httpx.Client, kind: str, upload_id: str) -> dict:
    return wait_for(client, f"/v1/{kind}/{upload_id}", lambda b: b["status"] != "pending")


def wait_job(client: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    return wait_for(
        client, f"/v1/jobs/{job_id}", lambda b: b["status"] in ("succeeded", "failed", "cancelled"), timeout=timeout
    )


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def restart_redis(down_s: float = 2.0) -> None:
    """Stops the machine's Redis and starts it again empty (it keeps nothing on disk here, as a cache
    deployment may): every message in the broker is lost."""
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], capture_output=True, timeout=30)
    time.sleep(down_s)
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
         "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/chaos.log"],
        check=True, timeout=30,
    )  # fmt: skip
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
            return
        time.sleep(0.1)
    raise AssertionError("Redis did not come back")


def restart_postgres() -> None:
    """A fast restart of the machine's PostgreSQL: every open connection is cut."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
                   check=True, timeout=120)  # fmt: skip
    for _ in range(100):
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError("PostgreSQL did not come back")


def poll_job(client: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    """wait_job for a stack whose store or broker may be down a while: 503s are waited out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = client.get(f"/v1/jobs/{job_id}")
        except httpx.TransportError:
            r = None
        if r is not None and r.status_code == 200 and r.json()["status"] in ("succeeded", "failed", "cancelled"):
            return r.json()
        assert r is None or r.status_code in (200, 503), r.text  # never a 500
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end within {timeout} s")
