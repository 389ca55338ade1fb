"""Each tenant's compiler cache (workers/compile_cache.py): never another tenant's, never a link or a FIFO
followed out of what a sandboxed job left behind, never over its limit."""

from __future__ import annotations

import os

import pytest

from workers.compile_cache import MAX_DEPTH, MAX_ENTRIES, TenantCompileCache, copy_tree


def job_left(folder, files: dict[str, bytes]):
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def test_a_tenants_next_job_gets_what_its_last_job_compiled_and_no_other_tenant_does(tmp_path):
    root = tmp_path / "cache"
    first = tmp_path / "job1" / "cache"
    job_left(first, {"inductor/fxgraph/ab/entry": b"kernel", "inductor/cpp.so": b"\x7fELF"})
    TenantCompileCache(root, "ten_a", 64).check_in(first)

    mine, theirs = tmp_path / "job2" / "cache", tmp_path / "job3" / "cache"
    TenantCompileCache(root, "ten_a", 64).check_out(mine)
    TenantCompileCache(root, "ten_b", 64).check_out(theirs)
    assert (mine / "inductor/fxgraph/ab/entry").read_bytes() == b"kernel"
    assert theirs.is_dir() and list(theirs.iterdir()) == []


def test_links_fifos_and_devices_a_job_leaves_are_not_followed_or_copied(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("the worker's secret")
    job = tmp_path / "job" / "cache"
    job_left(job, {"inductor/ok": b"fine"})
    (job / "inductor" / "link").symlink_to(secret)
    (job / "dirlink").symlink_to(tmp_path)
    os.mkfifo(job / "inductor" / "fifo")  # opened, it would block the worker
    cache = TenantCompileCache(tmp_path / "cache", "ten_a", 64)
    cache.check_in(job)
    into = tmp_path / "next" / "cache"
    cache.check_out(into)
    assert sorted(str(p.relative_to(into)) for p in into.rglob("*")) == ["inductor", "inductor/ok"]


def test_a_cache_over_its_limit_is_neither_kept_nor_handed_out(tmp_path):
    job = tmp_path / "job" / "cache"
    job_left(job, {"big": b"x" * (2 * 2**20)})
    cache = TenantCompileCache(tmp_path / "cache", "ten_a", 1)
    cache.check_in(job)
    assert not cache.folder.exists()
    # grown past the limit after it was kept (a lower limit set by the operator): the job starts cold
    job_left(cache.folder, {"big": b"x" * (2 * 2**20)})
    into = tmp_path / "next"
    cache.check_out(into)
    assert list(into.iterdir()) == []
    with pytest.raises(Exception):
        copy_tree(cache.folder, tmp_path / "copy", 2**20)
    assert (cache.folder / "big").stat().st_size == 2 * 2**20


def test_off_and_bad_ids(tmp_path):
    job = tmp_path / "job"
    job_left(job, {"a": b"1"})
    TenantCompileCache(tmp_path / "cache", "ten_a", 0).check_in(job)
    assert not (tmp_path / "cache").exists()
    for bad in ("../ten_b", "", "a/b", ".", "ten_a\n"):
        with pytest.raises(ValueError):
            TenantCompileCache(tmp_path / "cache", bad, 64)


def test_a_tree_too_deep_or_too_many_files_is_not_kept_and_the_last_good_cache_stays(tmp_path):
    """A hostile job's 1,200-level tree broke rglob and rmtree (RecursionError) on its tenant's next jobs; 20,000
    empty files were free under a byte limit and copied before every job. Neither is kept now."""
    cache = TenantCompileCache(tmp_path / "cache", "ten_a", 64)
    good = tmp_path / "good" / "cache"
    job_left(good, {"inductor/k.so": b"kernel"})
    cache.check_in(good)
    deep = tmp_path / "deep" / "cache"
    (deep / "/".join(["d"] * (MAX_DEPTH + 5))).mkdir(parents=True)
    cache.check_in(deep)
    many = tmp_path / "many" / "cache"
    many.mkdir(parents=True)
    for i in range(MAX_ENTRIES + 1):
        (many / str(i)).touch()
    cache.check_in(many)
    assert sorted(p.name for p in cache.folder.rglob("*")) == ["inductor", "k.so"]
    assert [p.name for p in cache.folder.parent.iterdir()] == ["ten_a"]  # no staging or old folder left


def test_a_link_where_the_jobs_cache_should_be_is_not_followed_to_another_tenants(tmp_path):
    root = tmp_path / "cache"
    theirs = tmp_path / "b" / "cache"
    job_left(theirs, {"kern.so": b"B's kernel"})
    TenantCompileCache(root, "ten_b", 64).check_in(theirs)
    job = tmp_path / "job"
    job.symlink_to(root / "tenants" / "ten_b")
    mine = TenantCompileCache(root, "ten_a", 64)
    mine.check_in(job)
    into = tmp_path / "next"
    mine.check_out(into)
    assert list(into.iterdir()) == []
