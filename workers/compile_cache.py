"""Each tenant's compiler cache on this worker: what inductor (and Triton, on a GPU) built for a tenant's earlier
jobs, so the next job of the same tenant skips the C++/Triton compile of graphs it has already seen (the digits
CNN: 14–17 s cold, about 3 s warm). A cold cache costs a user time on every job, and the suite time too.

Why per tenant, and copied rather than shared: what is in the cache was written by code running in a tenant's
sandbox (compiled kernels that later jobs load and run). One tenant's job must never load what another tenant's
job wrote, so each tenant has a folder of its own, keyed by the tenant's id. The job gets a *copy* in its own
folder (its uid owns it, like out/ and checkpoints/), and the copy replaces the tenant's folder only when the
job ended well: two jobs of one tenant never write into one folder, a job killed mid-write leaves nothing half
written behind, and the last job to finish wins (it is a cache: losing an entry costs a compile, no more).

Hand-written rather than `shutil.copytree`: what comes back from a sandbox is not trusted. Only regular files
and folders are copied, never symlinks (the parent runs as root and would follow them), FIFOs or devices
(opening a FIFO blocks), and the copy stops at the size, entry-count and depth limits. The job's cache comes
back the same way (copied into a staging folder, then renamed), never moved as the child left it: a hostile
child's deep tree (1,200 levels broke `rglob` and `rmtree` with RecursionError), millions of empty files (free
under a byte limit, and copied before every job of the tenant), links, FIFOs or setuid bits stay behind."""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_ENTRIES = 20_000  # files and folders; inductor keeps a few per compiled graph
MAX_DEPTH = 32  # inductor's layout is 3-4 levels deep


class CacheTooLarge(Exception):
    """A cache past its size, entry-count or depth limit: not used."""


def copy_tree(source: Path, target: Path, limit_bytes: int) -> int:
    """Regular files and folders of `source` into `target` (created), without following anything; returns
    the bytes copied. Raises CacheTooLarge past `limit_bytes`, MAX_ENTRIES or MAX_DEPTH (what was copied
    stays: the caller drops it). Files are written without their mode bits (no setuid comes through)."""
    total = count = 0
    target.mkdir(parents=True, exist_ok=True)
    stack = [(source, target, 0)]
    while stack:
        src, dst, depth = stack.pop()
        with os.scandir(src) as entries:
            for entry in entries:
                count += 1
                if count > MAX_ENTRIES:
                    raise CacheTooLarge
                if entry.is_dir(follow_symlinks=False):
                    if depth + 1 > MAX_DEPTH:
                        raise CacheTooLarge
                    (dst / entry.name).mkdir(exist_ok=True)
                    stack.append((Path(entry.path), dst / entry.name, depth + 1))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
                    if total > limit_bytes:
                        raise CacheTooLarge
                    # O_NOFOLLOW: the entry was a regular file when listed; it cannot turn into a link now
                    fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                    with os.fdopen(fd, "rb") as f_in, open(dst / entry.name, "wb") as f_out:
                        shutil.copyfileobj(f_in, f_out, 1 << 20)
    return total


class TenantCompileCache:
    """`root`: this worker's caches ({home}/cache); `limit_mb`: the most one tenant's cache may hold (0: none)."""

    def __init__(self, root: Path, tenant_id: str, limit_mb: int):
        if not SAFE_ID.fullmatch(tenant_id):
            raise ValueError(f"not a tenant id: {tenant_id!r}")
        self.folder = root / "tenants" / tenant_id
        self.limit = limit_mb * 2**20

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def check_out(self, into: Path) -> None:
        """The tenant's cache, copied into the job's folder `into` (empty when the tenant has none yet)."""
        into.mkdir(parents=True, exist_ok=True)
        if not self.enabled or not self.folder.is_dir():
            return
        try:
            copy_tree(self.folder, into, self.limit)
        except Exception as e:  # a cache is never a reason to fail a job
            log.warning("compile cache not used (%s): the job compiles from scratch", type(e).__name__)
            shutil.rmtree(into, ignore_errors=True)
            into.mkdir(parents=True, exist_ok=True)

    def check_in(self, job_copy: Path) -> None:
        """The job's copy, after the job ended well, becomes the tenant's cache: copied (regular files and
        folders only, within the limits) into a staging folder beside the tenant's, which then replaces it by
        a rename. Over a limit, nothing is kept and the tenant's cache stays as it was."""
        if not self.enabled or job_copy.is_symlink() or not job_copy.is_dir():  # a link is not followed
            return
        parent = self.folder.parent
        staging = parent / f".{self.folder.name}.new.{uuid.uuid4().hex}"
        old = parent / f".{self.folder.name}.old.{uuid.uuid4().hex}"
        try:
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            copy_tree(job_copy, staging, self.limit)
            if os.path.lexists(self.folder):
                os.rename(self.folder, old)
            os.rename(staging, self.folder)
        except CacheTooLarge:
            log.info("compile cache over its limits (%d MB, %d entries): not kept", self.limit // 2**20, MAX_ENTRIES)
        except Exception:  # another job of the tenant won the race, or the disk is full: it is only a cache
            log.warning("could not keep the compile cache", exc_info=True)
        finally:
            for leftover in (staging, old):  # what this worker wrote itself: bounded in depth, safe to remove
                shutil.rmtree(leftover, ignore_errors=True)
