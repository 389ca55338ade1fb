"""Turns the engine's report into stored artifacts (blobs + lineage) and measurement rows, and the
job's `results` with the engine's file names replaced by artifact ids."""

from __future__ import annotations

import copy
from pathlib import Path

from sqlalchemy.orm import Session

from app.artifacts.tables import Artifact, Measurement
from app.blobs import get_blob_store
from app.db import new_id
from app.jobs.tables import Job


def _measurement_row(job_id: str, artifact_id: str | None, role: str, index: int, m: dict) -> Measurement:
    latency = m.get("latency_ms") or {}
    return Measurement(
        job_id=job_id,
        artifact_id=artifact_id,
        role=role,
        step_index=index,
        size_bytes=m["size_bytes"],
        params=m["params"],
        latency_b1_ms=(latency.get("b1") or {}).get("p50"),
        latency_bn_ms=(latency.get("bN") or {}).get("p50"),
        accuracy=m.get("accuracy"),
        agreement=m.get("agreement"),
        device=m.get("device", "cpu"),
        runtime=m.get("runtime", "eager"),
        data=m,
    )


def store_results(session: Session, job: Job, report: dict, out_dir: Path) -> dict:
    store = get_blob_store()
    results = copy.deepcopy(report)
    session.add(_measurement_row(job.id, None, "baseline", 0, report["baseline"]))
    ids: dict[str, str] = {}
    for index, step in enumerate(results["steps"], start=1):
        # a step may have several artifacts (one per runtime it measured, or a search's Pareto front): each is
        # stored; the step names the recommended one
        options = [*step.get("runtimes", []), *step.get("front", [])]
        entries = [step, *(r for r in options if r["artifact_id"] != step["artifact_id"])]
        for entry in entries:
            filename = entry["artifact_id"]
            key, sha256, size = store.put_file(out_dir / filename)
            env = entry["measurement"].get("env") or {}
            artifact = Artifact(
                id=new_id("art"),
                tenant_id=job.tenant_id,
                job_id=job.id,
                source_model_id=job.model_id,
                step_index=index,
                method=step["method"],
                params=step.get("params") or {},
                filename=filename,
                format=entry["format"],
                sha256=sha256,
                size_bytes=size,
                blob_key=key,
                toolchain=env.get("versions") or env,
            )
            session.add(artifact)
            session.flush()
            session.add(_measurement_row(job.id, artifact.id, "step", index, entry["measurement"]))
            ids[filename] = artifact.id
        for entry in [step, *options]:
            entry["artifact_id"] = ids[entry["artifact_id"]]
        if "recommended" in step:
            step["recommended"] = step["artifact_id"]
        _store_candidates(session, job.id, index, step.get("search"), ids)
    results["final"]["artifact_id"] = ids[results["final"]["artifact_id"]]
    return results


def _store_candidates(session: Session, job_id: str, index: int, search: dict | None, ids: dict[str, str]) -> None:
    """A search's every measured candidate gets a measurement row (role `candidate`); those on the front
    point at their stored artifact, the others' files were not kept."""
    for candidate in (search or {}).get("candidates", []):
        for found in candidate.get("artifacts", []):
            found["artifact"] = ids.get(found.get("artifact"))
            session.add(_measurement_row(job_id, found["artifact"], "candidate", index, found["measurement"]))
