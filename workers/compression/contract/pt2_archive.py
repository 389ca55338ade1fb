"""What a torch.export archive (.pt2) may hold, checked from its bytes before `torch.export.load` reads it.

`torch.export.load` unpickles several members with full `pickle` (weights or constants whose config says
`use_pickle: true`, torchbind (`custom_obj_*`) and opaque (`opaque_obj_*`) constants, the legacy `*.pt`
weight and constant files, and the sample inputs whenever they fail a `weights_only` load) and can load
compiled AOTInductor code: forcing `weights_only` on `torch.load` reaches none of that. So the archive is
read here as a zip, member by member, and anything that would run code is refused:
- `models/*.json`: the graph, JSON (read by torch's own deserializer: op names, no code);
- `data/weights/*_config.json`, `data/constants/*_config.json`: JSON, parsed here; every entry must be a
  raw tensor payload (`use_pickle: false`, `weight_N` / `tensor_N`);
- `data/weights/weight_N`, `data/constants/tensor_N`: raw bytes, never parsed as objects;
- `data/sample_inputs/*.pt`: a torch.save archive whose pickle is scanned with `pickletools` (opcodes
  only, nothing runs): it may name only the globals that rebuild tensors;
- `archive_format`, `archive_version`, `byteorder`, `.data/*`, `extra/*`: plain text;
- everything else (AOTInductor shared objects, ExecuTorch, MTIA, legacy pickles) is refused.
Torch-free (zipfile, json, pickletools), so the API checks an upload before storing it as `ready`."""

from __future__ import annotations

import io
import json
import pickletools
import re
import zipfile
import zlib
from pathlib import PurePosixPath

from .errors import UnsupportedFormatError
from .vocabulary import JobErrorCode

CONFIG_LIMIT = 64 * 2**20  # a config JSON or a pickle larger than this is not a real archive's
SAMPLE_LIMIT = 256 * 2**20
TEXT_MEMBERS = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
PAYLOAD = {"weights": re.compile(r"weight_\d+"), "constants": re.compile(r"tensor_\d+")}
# what torch.save writes for tensors, parameters and their containers; nothing here runs user code
TENSOR_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("collections", "OrderedDict"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch.storage", "UntypedStorage"),
    *(("torch", name) for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8")),
}
STORAGE = re.compile(r"(?:[A-Z][A-Za-z0-9]*)?Storage")  # torch.FloatStorage, torch.BFloat16Storage, ...
REFUSED_OPCODES = {"EXT1", "EXT2", "EXT4"}  # the copyreg extension registry names callables by number


def refuse(reason: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"this .pt2 archive cannot be loaded safely: {reason}. Export it again with torch.export.save from a "
        "plain model (tensors as weights and constants), or upload ONNX or safetensors weights",
        code=JobErrorCode.PICKLE_REFUSED,
    )


def check_pt2_file(path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            check_pt2_archive(archive)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError):
        # a member that does not inflate (bad data, an unknown or encrypted compression): a bad upload, not a 500
        raise UnsupportedFormatError(
            "corrupt .pt2 archive: a member does not decompress (a damaged or cut-off file); upload it again, "
            "as torch.export.save wrote it",
            code=JobErrorCode.CORRUPT_ARCHIVE,
        ) from None


def check_pt2_archive(archive: zipfile.ZipFile) -> None:
    """Raises UnsupportedFormatError (code pickle_refused) naming the first member that could run code."""
    names = archive.namelist()
    root = _root(names)
    for name in names:
        member = name[len(root) :]
        if name.endswith("/"):
            continue
        kind = _kind(member)
        if kind is None:
            raise refuse(f"it holds {member!r}, which the loader would unpickle or run")
        if kind == "config":
            _check_config(archive, name, member)
        elif kind == "sample_inputs":
            _check_sample_inputs(archive, name, member)


def _root(names: list[str]) -> str:
    firsts = {n.split("/", 1)[0] for n in names}
    if len(firsts) != 1:
        raise refuse("its members are not under one archive folder")
    return firsts.pop() + "/"


def _kind(member: str) -> str | None:
    path = PurePosixPath(member)
    if member in TEXT_MEMBERS or (len(path.parts) >= 2 and path.parts[0] == "extra"):
        return "text"
    if len(path.parts) == 2 and path.parts[0] == "models" and path.suffix == ".json":
        return "graph"
    if len(path.parts) == 3 and path.parts[0] == "data" and path.parts[1] in PAYLOAD:
        if path.name.endswith(f"_{path.parts[1]}_config.json"):
            return "config"
        if PAYLOAD[path.parts[1]].fullmatch(path.name):
            return "payload"
    if len(path.parts) == 3 and path.parts[:2] == ("data", "sample_inputs") and path.suffix == ".pt":
        return "sample_inputs"
    return None


def _read(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise refuse(f"{name!r} is {info.file_size} bytes, larger than any real archive's")
    with archive.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise refuse(f"{name!r} is larger than it says")
    return data


def _check_config(archive: zipfile.ZipFile, name: str, member: str) -> None:
    kind = PurePosixPath(member).parts[1]
    try:
        config = json.loads(_read(archive, name, CONFIG_LIMIT)).get("config")
    except (ValueError, AttributeError):
        raise refuse(f"{member!r} is not a valid payload config") from None
    if not isinstance(config, dict):
        raise refuse(f"{member!r} is not a valid payload config")
    for fqn, entry in config.items():
        if not isinstance(entry, dict):
            raise refuse(f"{member!r} has a malformed entry for {fqn!r}")
        if entry.get("use_pickle"):
            raise refuse(f"{kind[:-1]} {fqn!r} is stored with pickle (use_pickle: true)")
        path_name = str(entry.get("path_name", ""))
        if not PAYLOAD[kind].fullmatch(path_name):
            what = "a TorchScript (torchbind) object" if path_name.startswith("custom_obj") else "a pickled object"
            raise refuse(f"{kind[:-1]} {fqn!r} is {what} ({path_name!r}), which the loader would unpickle")


def _check_sample_inputs(archive: zipfile.ZipFile, name: str, member: str) -> None:
    data = _read(archive, name, SAMPLE_LIMIT)
    if not data:
        return
    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
        pickles = [n for n in inner.namelist() if n.endswith(".pkl")]
        if len(pickles) != 1:
            raise refuse(f"{member!r} is not a torch.save archive")
        _check_pickle(_read(inner, pickles[0], CONFIG_LIMIT), member)
    except zipfile.BadZipFile:
        raise refuse(f"{member!r} is a bare pickle, not a torch.save archive") from None


def _check_pickle(data: bytes, member: str) -> None:
    """Every callable a pickle can reach is named by a GLOBAL, INST or STACK_GLOBAL opcode: allow only those
    that rebuild tensors. pickletools reads opcodes; nothing is executed."""
    try:
        for module, attr in pickle_globals(data):
            if (module, attr) not in TENSOR_GLOBALS and not (module == "torch" and STORAGE.fullmatch(attr)):
                raise refuse(f"{member!r} would call {module}.{attr} when loaded")
    except UnnamedGlobal as e:
        raise refuse(f"{member!r} {e}") from None
    except ValueError as e:
        raise refuse(f"{member!r} is not a valid pickle ({e})") from None


class UnnamedGlobal(Exception):
    """A global whose name is not a plain string the scanner can read (built at load time)."""


MARK = object()  # the stack's mark
MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """The (module, name) of every global a pickle would import, read by simulating its stack and memo
    over pickletools' opcodes. STACK_GLOBAL takes its two names from the stack, and they may have been
    stored in the memo and fetched back (`BINPUT` / `BINGET`) or duplicated: tracking only the last
    strings seen would miss a name built that way. Anything not a plain string where a name is taken is
    refused (UnnamedGlobal). Written by hand: scanners in the field (picklescan, fickling) flag a deny-list of
    known-dangerous names; this is an allow-list, and must know every name."""
    stack: list[object] = []
    memo: dict[int, object] = {}
    found: list[tuple[str, str]] = []

    def pop(n: int) -> list[object]:
        if n > len(stack):
            raise ValueError("the stack runs empty")
        taken = stack[len(stack) - n :] if n else []
        del stack[len(stack) - n :]
        return taken

    for op, arg, _ in pickletools.genops(data):
        if op.name in REFUSED_OPCODES:
            raise UnnamedGlobal("names a callable through the copyreg extension registry")
        if op.name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            found.append((module, attr))
        if op.name in MEMO_PUT:
            memo[arg] = stack[-1] if stack else None
            continue
        if op.name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
            continue
        if op.name in MEMO_GET:
            stack.append(memo.get(arg))
            continue
        if op.name == "DUP":
            stack.append(stack[-1] if stack else None)
            continue
        if op.name == "STACK_GLOBAL":
            module, attr = pop(2)
            if not (isinstance(module, str) and isinstance(attr, str)):
                raise UnnamedGlobal("builds a global name at load time")
            found.append((module, attr))
            stack.append(None)
            continue
        before = [s.name for s in op.stack_before]
        if "mark" in before:  # everything above the topmost mark, the mark, then what lies below it
            while stack and stack[-1] is not MARK:
                stack.pop()
            if not stack:
                raise ValueError("no mark on the stack")
            stack.pop()
            pop(before.index("mark"))
        else:
            pop(len(before))
        for pushed in op.stack_after:
            stack.append(
                MARK if pushed.name == "mark" else arg if isinstance(arg, str) and pushed.name == "str" else None
            )
    return found
