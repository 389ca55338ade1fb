"""Stores a run's report: every artifact file into the blob store with its lineage, a measurement row per
measured model, and the job's `results` with the engine's file names replaced by artifact ids."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from app.store.blobs import get_blob_store
from app.store.db import new_id
from app.store.tables.artifacts import Artifact, Measurement
from app.store.tables.jobs import Job
from workers.compression.contract.measure import Measurement as Measured
from workers.compression.contract.report import Report


def _measurement_row(job_id: str, artifact_id: str | None, role: str, index: int, m: Measured) -> Measurement:
    latency = m.latency_ms
    return Measurement(
        job_id=job_id,
        artifact_id=artifact_id,
        role=role,
        step_index=index,
        size_bytes=m.size_bytes,
        params=m.params,
        latency_b1_ms=latency.b1.p50 if latency.b1 else None,
        latency_bn_ms=latency.bN.p50 if latency.bN else None,
        accuracy=m.accuracy,
        agreement=m.agreement,
        device=m.device,
        runtime=m.runtime,
        data=m.model_dump(mode="json"),
    )


def store_results(session: Session, job: Job, report: Report, out_dir: Path) -> dict:
    """Returns the job's `results` (JSON)."""
    store = get_blob_store()
    session.add(_measurement_row(job.id, None, "baseline", 0, report.baseline))
    ids: dict[str, str] = {}
    for index, step in enumerate(report.steps, start=1):
        # a step may have several artifacts (one per runtime it measured, or a search's Pareto front): each is
        # stored; the step names the recommended one
        for entry in step.artifacts():
            key, sha256, size = store.put_file(out_dir / entry.artifact_id)
            env = entry.measurement.env or {}
            artifact = Artifact(
                id=new_id("art"),
                tenant_id=job.tenant_id,
                job_id=job.id,
                source_model_id=job.model_id,
                step_index=index,
                method=step.method,
                params=step.params or {},
                filename=entry.artifact_id,
                format=entry.format.value,
                sha256=sha256,
                size_bytes=size,
                blob_key=key,
                toolchain=env.get("versions") or env,
            )
            session.add(artifact)
            session.flush()
            session.add(_measurement_row(job.id, artifact.id, "step", index, entry.measurement))
            ids[entry.artifact_id] = artifact.id
        # a search's every measured candidate gets a row (role `candidate`); those on the front point at their
        # stored artifact, the others' files were not kept
        for candidate in step.search.candidates if step.search else []:
            for found in candidate.artifacts or []:
                row_artifact = ids.get(found.artifact) if found.artifact else None
                session.add(_measurement_row(job.id, row_artifact, "candidate", index, found.measurement))
    return report.with_artifact_ids(ids).model_dump(mode="json")
