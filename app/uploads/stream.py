"""Streaming multipart uploads: the `file` part goes to a temporary blob in chunks, hashed as it comes,
and is cut off (and deleted) the moment it passes the size limit.

Written over python-multipart's push parser rather than with `UploadFile` because Starlette spools the
whole file before the handler runs: the size limit could not stop a 50 GB upload early, and every byte
would be written to disk twice."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from app.store.blobs import BlobStore
from workers.compression.contract.vocabulary import ApiErrorCode

from ..errors import ApiError
from ..json_body import body_chunks

MAX_FIELD_BYTES = 64 * 1024


@dataclass
class ReceivedUpload:
    temp: Path
    sha256: str
    size: int
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)


class _Receiver:
    def __init__(self, store: BlobStore, max_bytes: int):
        self.store, self.max_bytes = store, max_bytes
        self.fields: dict[str, str] = {}
        self.temp: Path | None = None
        self.file = None
        self.digest = hashlib.sha256()
        self.size = 0
        self.filename: str | None = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._value = bytearray()
        self._in_file = False

    # python-multipart callbacks
    def on_part_begin(self) -> None:
        self._headers, self._name, self._value, self._in_file = {}, None, bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            if self.temp is not None:
                raise ApiError(400, ApiErrorCode.BAD_REQUEST, "send exactly one 'file' part")
            self._in_file = True
            self.filename = options.get(b"filename", b"").decode("utf-8", "replace") or None
            self.temp = self.store.new_temp()
            self.file = open(self.temp, "wb")  # noqa: SIM115 (closed in close())

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._in_file:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise ApiError(413, ApiErrorCode.TOO_LARGE, f"the file is larger than the limit of {self.max_bytes} bytes")
            self.digest.update(chunk)
            self.file.write(chunk)
        else:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise ApiError(400, ApiErrorCode.BAD_REQUEST, f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if not self._in_file and self._name:
            self.fields[self._name] = self._value.decode("utf-8", "replace")

    def close(self, keep: bool) -> None:
        if self.file is not None:
            self.file.close()
        if not keep and self.temp is not None:
            self.temp.unlink(missing_ok=True)


async def receive_upload(request: Request, store: BlobStore, max_bytes: int) -> ReceivedUpload:
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in options:
        raise ApiError(
            415,
            ApiErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "send the file as multipart/form-data with a part named 'file' (curl -F file=@model.pt2)",
        )
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes + MAX_FIELD_BYTES * 4:
        raise ApiError(413, ApiErrorCode.TOO_LARGE, f"the upload is larger than the limit of {max_bytes} bytes")
    receiver = _Receiver(store, max_bytes)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    parser = MultipartParser(options[b"boundary"], callbacks)
    keep = False
    try:
        async for chunk in body_chunks(request):
            parser.write(chunk)
        parser.finalize()
        if receiver.temp is None:
            raise ApiError(400, ApiErrorCode.MISSING_FILE, "the form has no part named 'file'")
        keep = True
    except ClientDisconnect:
        raise ApiError(400, ApiErrorCode.UPLOAD_INTERRUPTED, "the client disconnected before the upload finished") from None
    except ApiError:
        raise
    except Exception as e:  # python-multipart's parse errors
        raise ApiError(400, ApiErrorCode.BAD_REQUEST, f"malformed multipart body: {e}") from None
    finally:
        receiver.close(keep)
    return ReceivedUpload(receiver.temp, receiver.digest.hexdigest(), receiver.size, receiver.filename, receiver.fields)
