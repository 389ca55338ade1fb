"""The parsers a tenant's bytes meet first: a zip is one archive read one way, a pickle's every global is
known even when its name is built through the memo, a shard index names files in its folder only, and an
.npz is sized from its headers before anything inflates. Each case here was accepted before (issue 32)."""

from __future__ import annotations

import io
import json
import shutil
import struct
import sys
import zipfile

import numpy as np
import pytest
import torch

from workers.compression import InvalidDatasetError, InvalidModelError, UnsupportedFormatError, load_model
from workers.compression.contract.pt2_archive import UnnamedGlobal, pickle_globals
from workers.compression.contract.zip_check import check_single_archive
from workers.compression.data import MAX_ARRAY_BYTES, load_dataset
from workers.sandbox import Mounts, SandboxLimits
from workers.supervisor import supervise


def _zip(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _refused(tmp_path, data: bytes, match: str) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(data)
    with pytest.raises(UnsupportedFormatError, match=match) as e:
        check_single_archive(path)
    assert e.value.code == "corrupt_archive"


def test_archives_every_writer_makes_are_one_archive(tmp_path, cnn_pt2, cnn):
    """torch.export.save (zip64 end records), torch.jit.save, numpy, zipfile and Info-ZIP all pass."""
    torch.jit.save(torch.jit.trace(cnn, torch.zeros(1, 1, 8, 8)), tmp_path / "m.ts")
    np.savez_compressed(tmp_path / "x.npz", x=np.zeros((30, 4)), y=np.arange(30))
    (tmp_path / "folder" / "cls").mkdir(parents=True)
    (tmp_path / "folder" / "cls" / "a.txt").write_text("a" * 500)
    shutil.make_archive(str(tmp_path / "folder"), "zip", tmp_path, "folder")
    for path in (cnn_pt2, tmp_path / "m.ts", tmp_path / "x.npz", tmp_path / "folder.zip"):
        assert check_single_archive(path) == zipfile.ZipFile(path).namelist(), path


def test_two_archives_in_one_file_are_refused(tmp_path, cnn_pt2):
    pt2, other = cnn_pt2.read_bytes(), _zip({"cls/a.png": b"x" * 100})
    # Python's zipfile reads the last archive of a glued file (shifting its offsets); torch reads the first
    _refused(tmp_path, other + pt2, "recorded at byte|not where its locator")
    _refused(tmp_path, pt2 + other, "recorded at byte")
    _refused(tmp_path, b"MZ" + b"\0" * 100 + other, "recorded at byte")
    _refused(tmp_path, other + b"trailing", "no end-of-directory")


def test_duplicate_names_overlapping_members_and_lying_headers_are_refused(tmp_path):
    twice = io.BytesIO()
    with zipfile.ZipFile(twice, "w") as z, pytest.warns(UserWarning):
        z.writestr("a", b"1")
        z.writestr("a", b"2")
    _refused(tmp_path, twice.getvalue(), "twice")
    # a second directory entry pointing at the first member's bytes: a member read twice (a zip bomb's trick)
    data = bytearray(_zip({"a": b"A" * 1000, "b": b"B" * 10}, zipfile.ZIP_STORED))
    cd = data.index(b"PK\x01\x02")
    second = data.index(b"PK\x01\x02", cd + 4)
    data[second + 42 : second + 46] = struct.pack("<L", 0)  # b's local header offset -> a's
    _refused(tmp_path, bytes(data), "overlaps|local header names")
    # a local header that names another file than the directory does
    data = bytearray(_zip({"good": b"x" * 10}, zipfile.ZIP_STORED))
    data[30:34] = b"evil"
    _refused(tmp_path, bytes(data), "local header names")


def test_a_pickle_name_built_through_the_memo_is_found():
    """SHORT_BINUNICODE 'os' / BINPUT / POP, 'system' / BINPUT / POP, then BINGET, BINGET, STACK_GLOBAL: the
    last strings seen before STACK_GLOBAL are 'torch' and 'Size' (allowed), the name built is os.system."""
    payload = (
        b"\x80\x04" + b"\x8c\x02os\x94" + b"0" + b"\x8c\x06system\x94" + b"0"
        + b"\x8c\x05torch\x8c\x04Size00" + b"h\x00h\x01\x93" + b"\x8c\x02ls\x85R."
    )
    assert pickle_globals(payload) == [("os", "system")]
    built = b"\x80\x04" + b"\x8c\x02os" + b"\x8c\x06sys" + b"\x8c\x04tem\x85R" + b"\x93."  # a name not a string
    with pytest.raises((UnnamedGlobal, ValueError)):
        pickle_globals(built)
    import pickle

    real = io.BytesIO()
    torch.save({"w": torch.ones(2)}, real)
    inner = zipfile.ZipFile(io.BytesIO(real.getvalue()))
    found = pickle_globals(inner.read(next(n for n in inner.namelist() if n.endswith(".pkl"))))
    assert ("torch._utils", "_rebuild_tensor_v2") in found
    assert pickle_globals(pickle.dumps(print)) == [("builtins", "print")]


def test_a_shard_index_that_points_outside_its_folder_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    folder = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8)).save_pretrained(folder, safe_serialization=True)
    index = {"metadata": {}, "weight_map": {"embeddings.word_embeddings.weight": "../../etc/passwd"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    archive = shutil.make_archive(str(tmp_path / "bert"), "zip", tmp_path, "bert")
    with pytest.raises(InvalidModelError, match="outside the folder"):
        load_model(archive)


def test_an_npz_that_inflates_past_its_budget_is_refused_from_its_headers(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((MAX_ARRAY_BYTES // 4 + 1024,), np.float32))  # a few KB on disk
    assert path.stat().st_size < 2**20
    with pytest.raises(InvalidDatasetError, match="MiB in memory"):
        load_dataset(path)
    # a member that holds more than its header declares (a lying header) is refused too
    lying = tmp_path / "lying.npz"
    header = io.BytesIO()
    np.lib.format.write_array(header, np.zeros(4, np.float32))
    with zipfile.ZipFile(lying, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", header.getvalue() + b"\0" * 2**20)
    with pytest.raises(InvalidDatasetError, match="more bytes than its header"):
        load_dataset(lying)


def test_a_childs_stderr_keeps_its_tail_within_its_limit(tmp_path):
    """A job child that writes 40 MB to stderr leaves its log at most the limit on the worker's disk, with a
    line saying what was dropped (before: 297 MiB in one job)."""
    mounts = Mounts(tmp_path / "job")
    code = "import sys\nfor i in range(40):\n    sys.stderr.write('y' * 2**20)\nsys.stderr.write('the end\\n')\n"
    from workers.compression.contract.protocol import InspectDataset

    outcome = supervise(InspectDataset(path="/dev/null"), mounts, memory_limit_mb=2048, time_limit_s=120,
                        sandbox=True, limits=SandboxLimits(log_bytes=2**20), argv=[sys.executable, "-c", code])
    log = mounts.host / "child.log"
    assert log.stat().st_size <= 2**20 + 2**19, log.stat().st_size
    text = log.read_text()
    assert text.startswith("[output truncated:") and text.rstrip().endswith("the end")
    assert "the end" in outcome.log_tail


def test_a_childs_stderr_counts_in_its_disk_quota(tmp_path):
    """Output a job writes to stderr is on the worker's disk until the job ends: it counts in the job's disk
    limit like its artifacts, and the job ends `disk_exhausted` (before: a log allowed past the disk limit
    was nobody's, and the child died of SIGXFSZ as a 'crash')."""
    mounts = Mounts(tmp_path / "job")
    code = "import sys, time\nwhile True:\n    sys.stderr.write('y' * 2**20); time.sleep(0.01)\n"
    from workers.compression.contract.protocol import InspectDataset

    outcome = supervise(InspectDataset(path="/dev/null"), mounts, memory_limit_mb=2048, time_limit_s=120,
                        sandbox=True, limits=SandboxLimits(disk_mb=16, log_bytes=2**30), argv=[sys.executable, "-c", code])
    assert outcome.code == "disk_exhausted", outcome
    assert "its log" in outcome.message
