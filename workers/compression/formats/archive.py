"""Safe extraction of uploaded zip archives (Hugging Face folders, zipped ONNX with external data)."""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..contract.errors import InvalidModelError, UnsupportedFormatError
from ..contract.zip_check import check_single_archive

MAX_MEMBERS = 10_000
MAX_UNCOMPRESSED_BYTES = 64 * 2**30  # a zip bomb stops here, a real checkpoint does not
# weights compress by 1.1x, tokenizers' JSON by ~5x, a run of zeros by 1000x: a member over RATIO_FLOOR
# bytes that shrank by more than MAX_RATIO is a bomb (zipfile never writes more than the declared size)
MAX_RATIO = 100
RATIO_FLOOR = 1 << 20
DISK_HEADROOM = 1.1  # extraction needs what the members declare, and a tenth more, free on the disk


def single_archive(path: Path, error=InvalidModelError) -> list[str]:
    """The member names of `path`, which must be exactly one well-formed zip (contract/zip_check.py): the
    sandboxed reader checks again what the API checked at upload, on the bytes it is about to read."""
    try:
        return check_single_archive(path)
    except UnsupportedFormatError as e:
        raise error(e.message, code=e.code) from None


def torch_reads_the_same(path: Path) -> None:
    """torch's own zip reader (miniz) must list exactly the members Python's zipfile does: the archive is
    read one way, whoever reads it."""
    import torch

    names = single_archive(path)
    try:
        records = set(torch._C.PyTorchFileReader(str(path)).get_all_records())
    except RuntimeError as e:
        raise InvalidModelError(f"torch cannot read this archive: {str(e).splitlines()[0]}") from None
    root = names[0].split("/", 1)[0] + "/" if names else ""
    ours = {n[len(root) :] for n in names if not n.endswith("/")}
    if records != ours:
        raise InvalidModelError("torch's reader and Python's see different members in this archive; it is refused")


def extract_zip(path: Path, dest: Path) -> Path:
    """Extracts `path` into `dest`, refusing absolute paths, `..`, links and bombs.

    Returns the folder that holds the content (the single top-level folder when there is one).
    """
    single_archive(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise InvalidModelError(f"corrupt zip archive: {e}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise InvalidModelError(f"the archive has {len(infos)} members; at most {MAX_MEMBERS} are accepted")
        total = sum(i.file_size for i in infos)
        if total > MAX_UNCOMPRESSED_BYTES:
            raise InvalidModelError("the archive expands to more than 64 GiB")
        for info in infos:
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(1, info.compress_size):
                raise InvalidModelError(
                    f"archive member {info.filename!r} expands {info.file_size // max(1, info.compress_size)}-fold "
                    f"(at most {MAX_RATIO}x is accepted): a real checkpoint does not compress that well"
                )
        dest.mkdir(parents=True, exist_ok=True)
        if (free := shutil.disk_usage(dest).free) < total * DISK_HEADROOM:
            raise InvalidModelError(
                f"the archive expands to {total / 2**20:.0f} MiB and the worker has {free / 2**20:.0f} MiB free; "
                "try again later or upload a smaller model"
            )
        for info in infos:
            name = PurePosixPath(info.filename)
            if name.is_absolute() or ".." in name.parts or "\\" in info.filename:
                raise InvalidModelError(f"archive member {info.filename!r} points outside the archive")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InvalidModelError(f"archive member {info.filename!r} is a symbolic link; links are refused")
        try:
            zf.extractall(dest)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise InvalidModelError(f"corrupt zip archive: {e}") from None
    entries = [p for p in dest.iterdir() if not p.name.startswith("__MACOSX")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest
