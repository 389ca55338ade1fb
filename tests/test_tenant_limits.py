"""Per-tenant limits hold under concurrency, on SQLite and PostgreSQL: W workers claiming one tenant's jobs
at the same instant start at most its running limit, and N uploads recorded at the same instant leave at
most its pending-inspection limit waiting. Each check used to be read and then acted on, so all W (or N)
saw room."""

from __future__ import annotations

import hashlib
import threading

from sqlalchemy import func, select

from app.errors import ApiError
from app.store.job_state import claim, stale_cutoff
from app.store.tables import Dataset, Job, Model
from app.store.tables.jobs import RUNNING
from app.uploads.service import record_upload
from app.uploads.stream import ReceivedUpload
from tests.test_blob_refs import store_db  # noqa: F401 - the fixture: a migrated database of each kind

WORKERS = 8
ROUNDS = 5


def _at_once(n: int, fn) -> list:
    """Runs fn(i) in n threads released together; returns what each returned or raised."""
    start, out = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - returned to the caller
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_workers_claiming_at_once_start_at_most_the_running_limit(store_db):  # noqa: F811
    sessions, _ = store_db
    limit = 2
    with sessions() as s:
        s.add(Model(id="mdl_t", tenant_id="ten_a", name="m", format="pt2", sha256="0" * 64, size_bytes=1, blob_key="k"))
        s.commit()
    for round_ in range(ROUNDS):
        ids = [f"job_{round_}_{i}" for i in range(WORKERS)]
        with sessions() as s:
            s.execute(Job.__table__.update().where(Job.status == RUNNING).values(status="succeeded"))
            s.add_all(Job(id=i, tenant_id="ten_a", model_id="mdl_t", recipe={"steps": []}, device="cpu", queue="cpu")
                      for i in ids)  # fmt: skip
            s.commit()

        def take(i: int):
            with sessions() as s:
                job = claim(s, ids[i], f"w{i}", stale_cutoff(60), 3, max_running_per_tenant=limit)
                return job is not None

        took = _at_once(WORKERS, take)
        assert not [t for t in took if isinstance(t, Exception)], took
        with sessions() as s:
            running = s.scalar(select(func.count()).select_from(Job).where(Job.status == RUNNING))
        assert running == sum(took) == limit, f"round {round_}: {running} running, {sum(took)} claims, limit {limit}"


def test_uploads_recorded_at_once_leave_at_most_the_pending_limit(store_db, monkeypatch):  # noqa: F811
    from app.store.config import get_settings

    sessions, store = store_db
    monkeypatch.setattr(get_settings(), "max_pending_inspections_per_tenant", 3)

    def upload(i: int):
        content = f"upload {i}".encode()
        temp = store.new_temp()
        temp.write_bytes(content)
        received = ReceivedUpload(temp, hashlib.sha256(content).hexdigest(), len(content), "d.npz")
        with sessions() as s:
            return record_upload(s, Dataset, "ten_b", received, "npz", store, "dst", None)

    results = _at_once(WORKERS, upload)
    refused = [r for r in results if isinstance(r, ApiError)]
    assert not [r for r in results if isinstance(r, Exception) and not isinstance(r, ApiError)], results
    assert len(refused) == WORKERS - 3 and {r.code for r in refused} == {"too_many_pending_uploads"}
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Dataset).where(Dataset.tenant_id == "ten_b")) == 3
    assert not list(store.root.glob("tmp/*")), "a refused upload's partial file stays behind"
