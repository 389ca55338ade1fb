"""One archive, read one way: a zip upload is accepted only when every reader must see the same members.

Readers disagree on malformed zips, and a tenant can build one for each: Python's `zipfile` finds the end of
central directory (EOCD) record nearest the end and, when the directory's recorded offset does not match
where it is, assumes bytes were prepended and shifts every offset (a self-extracting archive); torch's
reader (miniz) and numpy's take the offsets as written. Two archives glued together, or an archive with a
second directory, then read as two different sets of members: the check here passes one, the loader opens
the other. So the structure is checked, not trusted:

- exactly one EOCD at the very end (its comment reaches the last byte), with no zip64 trickery beyond the
  records it names, and no second EOCD or zip64 record anywhere after the central directory;
- the central directory ends exactly where the EOCD (or zip64 end record) begins, at the offset it
  declares: no bytes before the first member, between the directory and its end record, or after it;
- the first member starts at offset 0, members follow one another without overlap (a member read twice
  is how small zips expand to gigabytes), and each local header agrees with its directory entry (name,
  compression, and sizes unless streamed with a data descriptor);
- member names are unique, and there are at most `MAX_MEMBERS`.

Written by hand with `struct`: no library validates this (zipfile is lenient on purpose); it reads only
headers, never decompresses, and is bounded by the directory's size, so the API may run it on an upload.
"""

from __future__ import annotations

import struct
from pathlib import Path

from .errors import UnsupportedFormatError
from .vocabulary import JobErrorCode

MAX_MEMBERS = 100_000
MAX_DIRECTORY_BYTES = 64 * 2**20
EOCD = struct.Struct("<4s4H2LH")  # signature, disk, cd disk, entries here, entries, cd size, cd offset, comment
EOCD_SIG = b"PK\x05\x06"
ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, zip64 EOCD offset, disks
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
ZIP64_EOCD = struct.Struct(
    "<4sQ2H2L4Q"
)  # sig, size, made by, needed, disk, cd disk, entries here, entries, cd size, cd offset
ZIP64_EOCD_SIG = b"PK\x06\x06"
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
CENTRAL_SIG = b"PK\x01\x02"
LOCAL = struct.Struct("<4s2B4HL2L2H")
LOCAL_SIG = b"PK\x03\x04"
DATA_DESCRIPTOR_FLAG = 0x08
MAX_COMMENT = 0xFFFF


def corrupt(reason: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"this zip archive is malformed: {reason}. Readers would disagree on what it holds, so it is refused; "
        "write it again with one tool (torch.export.save, zipfile, `zip -r`)",
        code=JobErrorCode.CORRUPT_ARCHIVE,
    )


def check_single_archive(path: str | Path) -> list[str]:
    """Raises UnsupportedFormatError (corrupt_archive) unless `path` is exactly one well-formed zip; returns
    its member names in directory order."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        directory_start, directory_size, entries = _end_records(f, size)
        if directory_size > MAX_DIRECTORY_BYTES or entries > MAX_MEMBERS:
            raise corrupt(f"its directory lists {entries} members in {directory_size} bytes (too many)")
        f.seek(directory_start)
        directory = f.read(directory_size)
        members = _directory(directory, entries)
        _check_layout(f, members, directory_start)
    return [m.name for m in members]


def _end_records(f, size: int) -> tuple[int, int, int]:
    """(directory offset, directory size, entries), from the end records, which must end the file exactly."""
    tail_len = min(size, EOCD.size + MAX_COMMENT)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    found, at = [], len(tail)
    while (at := tail.rfind(EOCD_SIG, 0, at)) >= 0:
        if at + EOCD.size <= len(tail):
            found.append(at)
    # the record whose comment reaches exactly the last byte is the archive's end
    ends = [i for i in found if i + EOCD.size + EOCD.unpack_from(tail, i)[7] == len(tail)]
    if len(ends) != 1:
        raise corrupt("no end-of-directory record ends the file" if not ends else "it has several end records")
    eocd_at = size - tail_len + ends[0]
    _, disk, cd_disk, here, entries, cd_size, cd_offset, _comment = EOCD.unpack_from(tail, ends[0])
    if disk or cd_disk or here != entries:
        raise corrupt("it spans several disks")
    end_of_directory = eocd_at
    f.seek(max(0, eocd_at - ZIP64_LOCATOR.size))
    if f.read(4) == ZIP64_LOCATOR_SIG:  # zip64 end records (torch writes them always) come right before
        end_of_directory, cd_size, cd_offset, entries = _zip64(f, eocd_at)
    elif 0xFFFFFFFF in (cd_size, cd_offset) or entries == 0xFFFF:
        raise corrupt("a zip64 archive without its locator")
    if cd_offset + cd_size != end_of_directory:
        raise corrupt(
            f"its directory is recorded at byte {cd_offset} but ends at byte {end_of_directory} "
            "(bytes before the archive, or a second directory)"
        )
    # nothing but its own end records after the directory: no second EOCD or zip64 record hidden there
    f.seek(end_of_directory)
    between = f.read(eocd_at - end_of_directory)
    if EOCD_SIG in between:
        raise corrupt("a second end-of-directory record follows the directory")
    return cd_offset, cd_size, entries


def _zip64(f, eocd_at: int) -> tuple[int, int, int, int]:
    f.seek(eocd_at - ZIP64_LOCATOR.size)
    sig, disk, record_at, disks = ZIP64_LOCATOR.unpack(f.read(ZIP64_LOCATOR.size))
    if sig != ZIP64_LOCATOR_SIG or disk or disks != 1:
        raise corrupt("a zip64 archive without a valid locator")
    if record_at + ZIP64_EOCD.size != eocd_at - ZIP64_LOCATOR.size:
        raise corrupt("its zip64 end record is not where its locator says, right before it")
    f.seek(record_at)
    raw = f.read(ZIP64_EOCD.size)
    sig, _size, _made, _needed, disk, cd_disk, here, entries, cd_size, cd_offset = ZIP64_EOCD.unpack(raw)
    if sig != ZIP64_EOCD_SIG or disk or cd_disk or here != entries:
        raise corrupt("its zip64 end record is invalid")
    return record_at, cd_size, cd_offset, entries


class Member:
    __slots__ = ("name", "offset", "method", "flags", "compressed", "size", "crc")

    def __init__(self, name: str, offset: int, method: int, flags: int, compressed: int, size: int, crc: int):
        self.name, self.offset, self.method, self.flags = name, offset, method, flags
        self.compressed, self.size, self.crc = compressed, size, crc


def _directory(directory: bytes, entries: int) -> list[Member]:
    members, names, at = [], set(), 0
    for _ in range(entries):
        if directory[at : at + 4] != CENTRAL_SIG or at + CENTRAL.size > len(directory):
            raise corrupt("its directory has fewer entries than it says")
        fields = CENTRAL.unpack_from(directory, at)
        flags, method, crc, compressed, size = fields[5], fields[6], fields[9], fields[10], fields[11]
        name_len, extra_len, comment_len, disk, offset = fields[12], fields[13], fields[14], fields[15], fields[18]
        raw_name = directory[at + CENTRAL.size : at + CENTRAL.size + name_len]
        extra = directory[at + CENTRAL.size + name_len : at + CENTRAL.size + name_len + extra_len]
        at += CENTRAL.size + name_len + extra_len + comment_len
        if at > len(directory) or disk:
            raise corrupt("a directory entry runs past the directory")
        compressed, size, offset = _zip64_extra(extra, compressed, size, offset)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if name in names:
            raise corrupt(f"the member name {name!r} appears twice (which one a reader takes depends on the reader)")
        names.add(name)
        members.append(Member(name, offset, method, flags, compressed, size, crc))
    if at != len(directory):
        raise corrupt("its directory holds more than its entries")
    return members


def _zip64_extra(extra: bytes, compressed: int, size: int, offset: int) -> tuple[int, int, int]:
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, at)
        if tag == 0x0001:
            values = iter(struct.unpack_from(f"<{length // 8}Q", extra, at + 4))
            if size == 0xFFFFFFFF:
                size = next(values, size)
            if compressed == 0xFFFFFFFF:
                compressed = next(values, compressed)
            if offset == 0xFFFFFFFF:
                offset = next(values, offset)
        at += 4 + length
    return compressed, size, offset


def _check_layout(f, members: list[Member], directory_start: int) -> None:
    """Members in file order start at 0, one after another, each local header matching its entry, and the
    last ends at or before the directory."""
    expected = 0
    for m in sorted(members, key=lambda m: m.offset):
        if m.offset != expected:
            raise corrupt(
                "bytes before the first member" if expected == 0 else f"member {m.name!r} overlaps or leaves a gap"
            )
        f.seek(m.offset)
        header = f.read(LOCAL.size)
        if len(header) < LOCAL.size or header[:4] != LOCAL_SIG:
            raise corrupt(f"member {m.name!r} has no local header where the directory says")
        fields = LOCAL.unpack(header)
        flags, method, crc, compressed, size, name_len, extra_len = (
            fields[3],
            fields[4],
            fields[7],
            fields[8],
            fields[9],
            fields[10],
            fields[11],
        )
        local_name = f.read(name_len).decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if local_name != m.name or method != m.method:
            raise corrupt(f"member {m.name!r}'s local header names {local_name!r} or another compression")
        streamed = flags & DATA_DESCRIPTOR_FLAG
        if (
            not streamed
            and 0xFFFFFFFF not in (compressed, size)
            and (compressed, size, crc)
            != (
                m.compressed,
                m.size,
                m.crc,
            )
        ):
            raise corrupt(f"member {m.name!r}'s local header and directory disagree on its size")
        expected = m.offset + LOCAL.size + name_len + extra_len + m.compressed
        if streamed:  # a data descriptor follows the data: 12 or 16 bytes, 20 or 24 for zip64
            expected = _after_descriptor(f, expected, m)
    if expected > directory_start:
        raise corrupt("its last member runs into the directory")
    if expected != directory_start:
        raise corrupt("bytes between its last member and its directory")


def _after_descriptor(f, at: int, m: Member) -> int:
    f.seek(at)
    raw = f.read(24)
    if raw[:4] == b"PK\x07\x08":
        raw = raw[4:]
        at += 4
    for width, fmt in ((12, "<3L"), (20, "<L2Q")):
        crc, compressed, size = struct.unpack_from(fmt, raw) if len(raw) >= width else (None, None, None)
        if (crc, compressed, size) == (m.crc, m.compressed, m.size):
            return at + width
    raise corrupt(f"member {m.name!r}'s data descriptor does not match its directory entry")
