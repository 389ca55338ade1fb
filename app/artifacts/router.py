from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import select

from app.store.blobs import get_blob_store
from app.store.tables.artifacts import Artifact, Measurement
from workers.compression.contract.vocabulary import ApiErrorCode

from ..dependencies import SessionDep, TenantDep, get_owned
from ..errors import ApiError
from ..openapi import errors
from .schemas import ArtifactOut

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])


def get_artifact(session, tenant, artifact_id: str) -> Artifact:
    return get_owned(session, Artifact, tenant, artifact_id, "artifact")


@router.get("/{artifact_id}", response_model=ArtifactOut, responses=errors(404))
def read_artifact(artifact_id: str, session: SessionDep, tenant: TenantDep) -> ArtifactOut:
    row = get_artifact(session, tenant, artifact_id)
    m = session.scalar(select(Measurement).where(Measurement.artifact_id == row.id))
    return ArtifactOut.of(row, measurement=m.data if m else None)


@router.get(
    "/{artifact_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        **errors(404, 410),
    },
)
def download_artifact(artifact_id: str, session: SessionDep, tenant: TenantDep):
    row = get_artifact(session, tenant, artifact_id)
    store = get_blob_store()
    if not store.exists(row.blob_key):
        raise ApiError(410, ApiErrorCode.GONE, "the artifact's file is missing from the blob store")
    # streamed in chunks; the sha256 lets clients verify what they received
    headers = {"ETag": f'"{row.sha256}"', "X-Content-SHA256": row.sha256}
    if (path := store.local_file(row.blob_key)) is not None:
        return FileResponse(path, filename=row.filename, media_type="application/octet-stream", headers=headers)
    headers |= {"Content-Length": str(row.size_bytes), "Content-Disposition": f'attachment; filename="{row.filename}"'}
    return StreamingResponse(store.iter_chunks(row.blob_key), media_type="application/octet-stream", headers=headers)
