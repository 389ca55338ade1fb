from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from sqlalchemy import select

from ..blobs import get_blob_store
from ..dependencies import SessionDep, TenantDep, get_owned
from ..errors import ApiError
from .schemas import ArtifactOut
from .tables import Artifact, Measurement

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])


def get_artifact(session, tenant, artifact_id: str) -> Artifact:
    return get_owned(session, Artifact, tenant, artifact_id, "artifact")


@router.get("/{artifact_id}", response_model=ArtifactOut)
def read_artifact(artifact_id: str, session: SessionDep, tenant: TenantDep) -> ArtifactOut:
    row = get_artifact(session, tenant, artifact_id)
    m = session.scalar(select(Measurement).where(Measurement.artifact_id == row.id))
    return ArtifactOut.of(row, m.data if m else None)


@router.get("/{artifact_id}/download", response_class=FileResponse)
def download_artifact(artifact_id: str, session: SessionDep, tenant: TenantDep) -> FileResponse:
    row = get_artifact(session, tenant, artifact_id)
    path = get_blob_store().path(row.blob_key)
    if not path.is_file():
        raise ApiError(410, "gone", "the artifact's file is missing from the blob store")
    # streamed from disk in chunks; the sha256 lets clients verify what they received
    return FileResponse(path, filename=row.filename, media_type="application/octet-stream",
                        headers={"ETag": f'"{row.sha256}"', "X-Content-SHA256": row.sha256})
