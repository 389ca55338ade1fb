"""Format detection from the bytes, never from the file name.

Reads only magic bytes and, for zip archives, their structure (contract/zip_check.py: headers and the
central directory, no member is decompressed or deserialized), so the API process may call it on an upload.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path, PurePosixPath

from .errors import UnsupportedFormatError
from .formats import ACCEPTED_FORMATS_TEXT, ModelFormat
from .vocabulary import JobErrorCode
from .zip_check import check_single_archive

PICKLE_REFUSAL = (
    "this file is a Python pickle (for example torch.save(model)); pickles can run arbitrary code when "
    f"loaded, so they are refused. Upload {ACCEPTED_FORMATS_TEXT} instead"
)


def _looks_like_pickle(head: bytes) -> bool:
    # protocol 2+ starts with the PROTO opcode; protocol 0/1 pickles start with a mark/opcode and are
    # refused as unknown anyway
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _looks_like_safetensors(head: bytes, file_size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len <= file_size - 8 and head[8:9] == b"{"


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto: field 1 (ir_version, varint) comes first as every exporter writes it: tag 0x08, a small
    # version, then another known field tag (producer_name 0x12, graph 0x3a, opset_import 0x42, ...).
    if len(head) < 3 or head[0] != 0x08 or not 1 <= head[1] <= 64:
        return False
    return head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x4A, 0x52, 0x5A, 0x62, 0x72, 0x7A)


def _relative_names(names: list[str]) -> list[PurePosixPath]:
    """Member names without a single shared top-level folder (torch archives and zipped folders have one)."""
    paths = [PurePosixPath(n) for n in names if not n.endswith("/")]
    tops = {p.parts[0] for p in paths if len(p.parts) > 1}
    if len(tops) == 1 and all(len(p.parts) > 1 for p in paths):
        return [PurePosixPath(*p.parts[1:]) for p in paths]
    return paths


def classify_zip(names: list[str]) -> ModelFormat:
    rel = _relative_names(names)
    as_text = {str(p) for p in rel}
    if "models/model.json" in as_text or "archive_format" in as_text:
        return ModelFormat.PT2
    if sorted(as_text) == ["model.bin", "model.xml"]:
        return ModelFormat.OPENVINO
    if "constants.pkl" in as_text and any(p.parts[0] == "code" for p in rel if p.parts):
        return ModelFormat.TORCHSCRIPT
    if any(p.name == "config.json" for p in rel) and any(p.suffix == ".safetensors" for p in rel):
        return ModelFormat.HUGGINGFACE
    if sum(p.suffix == ".onnx" for p in rel) == 1:
        return ModelFormat.ONNX
    if "data.pkl" in as_text:
        raise UnsupportedFormatError(PICKLE_REFUSAL, code=JobErrorCode.PICKLE_REFUSED)
    if any(p.name == "pytorch_model.bin" for p in rel):
        raise UnsupportedFormatError(
            "this Hugging Face checkpoint holds pickled weights (pytorch_model.bin); save it with "
            "save_pretrained(..., safe_serialization=True) to get *.safetensors and zip that folder",
            code=JobErrorCode.PICKLE_REFUSED,
        )
    raise UnsupportedFormatError(f"unrecognised zip archive; upload {ACCEPTED_FORMATS_TEXT}")


def detect_format(path: str | Path) -> ModelFormat:
    path = Path(path)
    if not path.is_file():
        raise UnsupportedFormatError(f"no model file at {path}", code=JobErrorCode.NOT_FOUND)
    size = path.stat().st_size
    if size == 0:
        raise UnsupportedFormatError("the file is empty", code=JobErrorCode.EMPTY_FILE)
    with open(path, "rb") as f:
        head = f.read(64)
    if zipfile.is_zipfile(path):
        # the structure here (bounded: headers only); what the members hold is checked where they are read,
        # in the sandbox (a .pt2's pickles: formats/exported.py), never in the API process
        return classify_zip(check_single_archive(path))
    _refuse_truncated_zip(head)
    if head.startswith(b"GGUF"):
        return _gguf(head)
    if _looks_like_pickle(head):
        raise UnsupportedFormatError(PICKLE_REFUSAL, code=JobErrorCode.PICKLE_REFUSED)
    if _looks_like_safetensors(head, size):
        return ModelFormat.SAFETENSORS
    if _looks_like_onnx(head):
        return ModelFormat.ONNX
    raise UnsupportedFormatError(f"unrecognised model file; upload {ACCEPTED_FORMATS_TEXT}")


def _gguf(head: bytes) -> ModelFormat:
    """A GGUF file (magic, then a little-endian uint32 version): versions 2 and 3 are what llama.cpp writes."""
    version = int.from_bytes(head[4:8], "little") if len(head) >= 8 else None
    if version not in (2, 3):
        raise UnsupportedFormatError(
            f"the file starts like GGUF but states version {version}; GGUF versions 2 and 3 are read "
            "(re-save it with a current llama.cpp or gguf package)"
        )
    return ModelFormat.GGUF


def _refuse_truncated_zip(head: bytes) -> None:
    # a zip's directory is at its end: a local-file header without one is a cut-off upload or download
    if head.startswith(b"PK\x03\x04"):
        raise UnsupportedFormatError(
            "the file starts like a zip archive but has no central directory: it is truncated or corrupt; "
            "upload the complete file",
            code=JobErrorCode.CORRUPT_ARCHIVE,
        )


DATASET_FORMATS_TEXT = (
    "an .npz or .safetensors file with a tensor 'x' (or arrays named after the model's inputs) and optional "
    "integer labels 'y', a .zip image folder, or text as .jsonl or .csv with a 'text' column"
)


def _text_kind(path: Path) -> str | None:
    """`jsonl` (first line a JSON object) or `csv` (a header row naming `text`), from the first 64 KiB."""
    with open(path, "rb") as f:
        head = f.read(65536)
    if b"\0" in head:
        return None
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut at the 64 KiB boundary
            return None
        text = head[: e.start].decode("utf-8-sig")
    first = text.lstrip().split("\n", 1)[0].strip()
    if first.startswith("{"):
        return "jsonl"
    import csv

    try:
        header = next(csv.reader([first]))
    except (csv.Error, StopIteration):
        return None
    return "csv" if "text" in [h.strip() for h in header] else None


def detect_dataset_format(path: str | Path) -> str:
    """`npz`, `safetensors`, `image_zip`, `jsonl` or `csv`, from the bytes (torch-free, for the API process too)."""
    path = Path(path)
    if not path.is_file():
        raise UnsupportedFormatError(f"no dataset file at {path}", code=JobErrorCode.NOT_FOUND)
    if path.stat().st_size == 0:
        raise UnsupportedFormatError("the dataset file is empty", code=JobErrorCode.EMPTY_FILE)
    with open(path, "rb") as f:
        head = f.read(64)
    if zipfile.is_zipfile(path):
        names = [n for n in check_single_archive(path) if not n.endswith("/")]
        return "npz" if names and all(n.endswith(".npy") for n in names) else "image_zip"
    _refuse_truncated_zip(head)
    if _looks_like_pickle(head):
        raise UnsupportedFormatError(
            f"this file is a Python pickle, which can run code when loaded; upload {DATASET_FORMATS_TEXT}",
            code=JobErrorCode.PICKLE_REFUSED,
        )
    if _looks_like_safetensors(head, path.stat().st_size):
        return "safetensors"
    kind = _text_kind(path)
    if kind is not None:
        return kind
    raise UnsupportedFormatError(f"unrecognised dataset file; upload {DATASET_FORMATS_TEXT}")


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The free-form string metadata of a safetensors file (read from its JSON header only)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return dict(header.get("__metadata__") or {})
