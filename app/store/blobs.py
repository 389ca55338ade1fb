"""The blob store: content-addressed files (`sha256/ab/abcdef…`), in a local directory (the default)
or an S3-compatible bucket (`SQUEEZE_BLOB_URL=s3://bucket/prefix`).

Uploads are written to a local temporary file while they stream in, hashed on the way, and put in
place only once complete, so identical bytes are stored once and a refused upload leaves nothing
behind. Workers read blobs as local files: the S3 store downloads each one once into a local cache."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from .config import get_settings

CHUNK = 1 << 20


def key_for(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256}"


def _checked(key: str) -> str:
    if ".." in key.split("/") or key.startswith("/"):
        raise ValueError(f"bad blob key {key!r}")
    return key


class LocalBlobStore:
    """Blobs under one directory, which the API and every worker share (a volume, or one machine)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def new_temp(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
        os.close(fd)
        return Path(name)

    def remove_stale_temps(self, older_than_s: float) -> list[str]:
        """Partial uploads nothing has written to for `older_than_s`: left by a process killed mid-upload
        (a live upload touches its file with every chunk). Returns the names removed."""
        cutoff, removed = time.time() - older_than_s, []
        for temp in self.tmp.glob("upload-*"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed.append(temp.name)
            except FileNotFoundError:  # finished or removed meanwhile
                pass
        return removed

    def commit(self, temp: Path, sha256: str) -> str:
        """Moves a complete temporary file to its content address; returns the key."""
        key = key_for(sha256)
        final = self.root / key
        if final.exists():  # the same bytes are already stored
            temp.unlink(missing_ok=True)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)
        return key

    def stage(self, source: Path) -> tuple[Path, str, int]:
        """A finished file (a worker's artifact) copied to a temporary file and hashed: (temp, sha256, size);
        `commit` then stores it (after the caller pinned its key: blob_refs.py)."""
        digest, temp = hashlib.sha256(), self.new_temp()
        with open(source, "rb") as src, open(temp, "wb") as dst:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        return temp, digest.hexdigest(), temp.stat().st_size

    def put_file(self, source: Path) -> tuple[str, str, int]:
        """Stores a finished file at once: (key, sha256, size)."""
        temp, sha256, size = self.stage(source)
        return self.commit(temp, sha256), sha256, size

    def local_path(self, key: str) -> Path:
        return self.root / _checked(key)

    def local_file(self, key: str) -> Path | None:
        """The file itself when it is on this machine (served with sendfile), else None."""
        path = self.local_path(key)
        return path if path.is_file() else None

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        with open(self.local_path(key), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def delete(self, key: str) -> None:
        self.local_path(key).unlink(missing_ok=True)

    # named blobs (job checkpoints): overwritten in place, never content-addressed

    def put_named(self, source: Path, key: str) -> None:
        final = self.local_path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = self.new_temp()
        shutil.copyfile(source, temp)
        os.replace(temp, final)

    def fetch_named(self, key: str, dest: Path) -> bool:
        source = self.local_path(key)
        if not source.is_file():
            return False
        shutil.copyfile(source, dest)
        return True

    def list_named(self, prefix: str) -> list[str]:
        folder = self.local_path(prefix)
        return (
            sorted(f"{prefix.rstrip('/')}/{p.name}" for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        )

    def check_writable(self) -> None:
        probe = self.new_temp()
        probe.write_bytes(b"ok")
        probe.unlink()


class S3BlobStore(LocalBlobStore):
    """Blobs in an S3-compatible bucket; `root` is this machine's cache of downloaded blobs and the
    place for temporary uploads. Transfers stream from and to disk (s3transfer, multipart)."""

    def __init__(self, root: Path, bucket: str, prefix: str, endpoint_url: str | None, region: str):
        super().__init__(root)
        import boto3  # only deployments on S3 need it loaded

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region)

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{_checked(key)}" if self.prefix else _checked(key)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def commit(self, temp: Path, sha256: str) -> str:
        key = key_for(sha256)
        try:
            if not self.exists(key):
                self.client.upload_file(str(temp), self.bucket, self._object(key))
        finally:
            temp.unlink(missing_ok=True)
        return key

    def local_path(self, key: str) -> Path:
        cached = self.root / "cache" / _checked(key)
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            temp = self.new_temp()
            self.client.download_file(self.bucket, self._object(key), str(temp))
            os.replace(temp, cached)  # content-addressed: a concurrent download writes the same bytes
        return cached

    def local_file(self, key: str) -> Path | None:
        return None

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._object(key))["Body"]
        yield from body.iter_chunks(CHUNK)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object(key))
        (self.root / "cache" / _checked(key)).unlink(missing_ok=True)

    def put_named(self, source: Path, key: str) -> None:
        self.client.upload_file(str(source), self.bucket, self._object(key))

    def fetch_named(self, key: str, dest: Path) -> bool:
        if not self.exists(key):
            return False
        self.client.download_file(self.bucket, self._object(key), str(dest))
        return True

    def list_named(self, prefix: str) -> list[str]:
        start = self._object(prefix.rstrip("/")) + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
        cut = len(self._object("x")) - 1  # the bucket prefix in front of every key
        return sorted(obj["Key"][cut:] for page in pages for obj in page.get("Contents", []))

    def check_writable(self) -> None:
        probe = self._object("readyz-probe")
        self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
        self.client.delete_object(Bucket=self.bucket, Key=probe)


BlobStore = LocalBlobStore | S3BlobStore


@lru_cache
def get_blob_store() -> BlobStore:
    settings = get_settings()
    if settings.blob_url.startswith("s3://"):
        bucket, _, prefix = settings.blob_url.removeprefix("s3://").partition("/")
        return S3BlobStore(settings.blob_dir, bucket, prefix, settings.s3_endpoint_url, settings.s3_region)
    return LocalBlobStore(settings.blob_dir)
