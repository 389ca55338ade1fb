"""JSON bodies and JSON-valued form fields, bounded before they are parsed: a size limit read as the body
streams in (413) and a nesting limit (400 malformed_json), so a hostile body costs at most
`max_json_bytes` of memory and never reaches a recursion limit (a 500)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from workers.compression.contract.vocabulary import ApiErrorCode

from .errors import ApiError

MAX_DEPTH = 64  # recipes nest 5 deep; nothing legitimate comes near this
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a body that sends nothing for `body_timeout_s` is cut off (400
    upload_interrupted), so a client that stops mid-body does not hold its request open."""
    from app.store.config import get_settings

    timeout = get_settings().body_timeout_s
    chunks = request.stream().__aiter__()
    while True:
        try:
            yield await asyncio.wait_for(chunks.__anext__(), timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ApiError(
                400, ApiErrorCode.UPLOAD_INTERRUPTED, f"the request body stopped arriving for {timeout:.0f} s"
            ) from None


async def read_json(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in body_chunks(request):
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        chunks.append(chunk)
    return loads(b"".join(chunks), "the request body")


def loads(raw: bytes | str, what: str, *, invalid: tuple[int, ApiErrorCode] = (400, ApiErrorCode.MALFORMED_JSON)) -> Any:
    """Parses JSON, refusing more than MAX_DEPTH levels of nesting (checked before the parser recurses).
    `invalid` is the answer to JSON that does not parse: a body's is 400; a form field's, 422."""
    if _depth(raw) > MAX_DEPTH:
        raise ApiError(400, ApiErrorCode.MALFORMED_JSON, f"{what} nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        status, code = invalid
        shown = raw[:80] if isinstance(raw, str) else raw[:80].decode("utf-8", "replace")
        raise ApiError(status, code, f"{what}: not valid JSON ({shown!r})") from None


def _depth(raw: bytes | str) -> int:
    """The deepest nesting of [ and { outside strings. A hand-written scan because the standard parser's
    only limit is the interpreter's recursion limit, reached as a RecursionError at ~1000 levels."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # the usual case, decided at C speed
        return 0
    depth = deepest = 0
    for token in _BRACKETS.finditer(_STRINGS.sub('""', text)):  # brackets outside strings only
        if token.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
        else:
            depth -= 1
    return deepest


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, ApiErrorCode.TOO_LARGE, f"the request body is larger than the limit of {max_bytes} bytes")
