"""Stores a run's report: every artifact file into the blob store with its lineage, a measurement row per
measured model, and the job's `results` with the engine's file names replaced by artifact ids.

The report and the files come from the job's sandbox, so nothing in them is trusted: an artifact is a
plain file name in the job's own out/ folder, a regular file (never a link), within the size limit, and
of the format the report claims, sniffed from its bytes, before it is read."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.orm import Session

from app.store import blob_refs
from app.store.blobs import get_blob_store, key_for
from app.store.db import new_id
from app.store.tables.artifacts import Artifact, Measurement
from app.store.tables.jobs import Job
from workers.compression.contract.errors import EngineError
from workers.compression.contract.formats import ModelFormat
from workers.compression.contract.measure import Measurement as Measured
from workers.compression.contract.report import Report
from workers.compression.contract.sniff import detect_format

ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


class UntrustedOutput(Exception):
    """What the job handed back is not what it claims: the job fails, nothing of it is stored."""


@contextlib.contextmanager
def private_copy(path: Path) -> Iterator[Path]:
    """A copy of a file the job wrote, made through a descriptor opened without following links, so the
    job can neither point it elsewhere nor change it between the check and the read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise UntrustedOutput(f"{path.name!r} cannot be opened as a plain file ({e.strerror})") from None
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            raise UntrustedOutput(f"{path.name!r} is not a regular file")
        with tempfile.TemporaryDirectory(prefix="squeeze-out-") as folder:
            copy = Path(folder) / path.name
            with open(copy, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
            yield copy


def checked_artifact(
    out_dir: Path, name: str, claimed: ModelFormat, max_bytes: int
) -> contextlib.AbstractContextManager:
    if not ARTIFACT_NAME.fullmatch(name) or name in (".", ".."):
        raise UntrustedOutput(f"artifact name {name[:80]!r} is not a plain file name")
    path = out_dir / name
    try:
        info = os.lstat(path)
    except OSError:
        raise UntrustedOutput(f"artifact {name!r} is missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise UntrustedOutput(f"artifact {name!r} is not a regular file")
    if info.st_size > max_bytes:
        raise UntrustedOutput(f"artifact {name!r} is {info.st_size} bytes, over the limit of {max_bytes}")
    return _sniffed(private_copy(path), claimed)


@contextlib.contextmanager
def _sniffed(copy: contextlib.AbstractContextManager, claimed: ModelFormat) -> Iterator[Path]:
    with copy as path:
        try:
            found = detect_format(path)
        except EngineError as e:
            raise UntrustedOutput(f"artifact {path.name!r} is not a model file: {e.message}") from None
        if found != claimed:
            raise UntrustedOutput(f"artifact {path.name!r} is {found}, not the {claimed} its report claims")
        yield path


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


def store_results(session: Session, job: Job, report: Report, out_dir: Path, max_bytes: int) -> Report:
    """Returns the job's `results`: the report with stored ids. Raises UntrustedOutput when a file is not
    what the report says."""
    store = get_blob_store()
    session.add(_measurement_row(job.id, None, "baseline", 0, report.baseline))
    ids: dict[str, str] = {}
    for index, step in enumerate(report.steps, start=1):
        # a step may have several artifacts (one per runtime it measured, or a search's Pareto front): each is
        # stored; the step names the recommended one
        for entry in step.artifacts():
            with checked_artifact(out_dir, entry.artifact_id, entry.format, max_bytes) as path:
                temp, sha256, size = store.stage(path)
                key = key_for(sha256)
                blob_refs.pin(session, key)  # before the bytes, in the transaction that adds the row
                store.commit(temp, sha256)
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
                runtime=entry.measurement.runtime,
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
    return report.with_artifact_ids(ids)
