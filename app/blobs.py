"""The blob store: content-addressed files (`sha256/ab/abcdef…`) in a local directory.

Uploads are written to a temporary file inside the store while they stream in, hashed on the way, and
moved into place (an atomic rename) only once complete, so identical bytes are stored once and a
failed or refused upload leaves nothing behind. Workers on other machines need the same directory
(a shared volume); an S3-compatible store would implement the same four methods."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .config import get_settings


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if ".." in key or key.startswith("/"):
            raise ValueError(f"bad blob key {key!r}")
        return self.root / key

    @staticmethod
    def key_for(sha256: str) -> str:
        return f"sha256/{sha256[:2]}/{sha256}"

    def new_temp(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
        os.close(fd)
        return Path(name)

    def commit(self, temp: Path, sha256: str) -> str:
        """Moves a complete temporary file to its content address; returns the key."""
        key = self.key_for(sha256)
        final = self.path(key)
        if final.exists():  # the same bytes are already stored
            temp.unlink(missing_ok=True)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)
        return key

    def put_file(self, source: Path) -> tuple[str, str, int]:
        """Copies a finished file (a worker's artifact) into the store: (key, sha256, size)."""
        digest, temp = hashlib.sha256(), self.new_temp()
        with open(source, "rb") as src, open(temp, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
        size = temp.stat().st_size
        return self.commit(temp, digest.hexdigest()), digest.hexdigest(), size

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def copy_to(self, key: str, dest: Path) -> Path:
        shutil.copyfile(self.path(key), dest)
        return dest

    def check_writable(self) -> None:
        probe = self.new_temp()
        probe.write_bytes(b"ok")
        probe.unlink()


def get_blob_store() -> BlobStore:
    return BlobStore(get_settings().blob_dir)
