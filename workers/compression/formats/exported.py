"""torch.export programs (.pt2): the first-class format."""

from __future__ import annotations

import contextlib
import functools
import inspect
import keyword
from pathlib import Path

import torch
from torch import nn

from ..contract.errors import InvalidModelError
from ..contract.inspection import FormatFacts
from ..contract.pt2_archive import check_pt2_file
from ..contract.vocabulary import Runtime
from .archive import torch_reads_the_same
from .packed import fold_packed_weights, is_packed
from .spec import InputSpec, LoadedModel, ModelFormat, check_input_names, module_device, spec_of_inputs

EXAMPLE_BATCH = 2  # export specializes sizes 0 and 1, so trace with 2 to keep the batch dynamic


@contextlib.contextmanager
def weights_only_torch_load():
    """Forces `torch.load(weights_only=True)` while a .pt2 archive is read.

    torch.export.load unpickles weights flagged `use_pickle` (and falls back to weights_only=False on
    failure), so a crafted .pt2 could run code. Patching the one entry point is the smallest way to
    close that for every path inside torch's loader.
    """
    original = torch.load

    @functools.wraps(original)
    def safe_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = safe_load
    try:
        yield
    finally:
        torch.load = original


class PackedProgram(nn.Module):
    """A program with several tensor inputs of one shape, fed one tensor packed along dimension 1; the
    program's own argument names say which entry goes where."""

    def __init__(self, program: nn.Module, input_names: tuple[str, ...], *, by_keyword: bool = False):
        super().__init__()
        self.program, self.input_names = program, input_names
        self.packed_names = input_names
        self.by_keyword = by_keyword  # exported with keyword arguments (Squeeze's own artifacts): called so

    def bind_inputs(self, names: tuple[str, ...]) -> None:
        check_input_names(names, self.input_names, self.input_names)
        self.packed_names = names

    def forward(self, x: torch.Tensor):
        inputs = {name: x[:, self.packed_names.index(name)] for name in self.input_names}
        return self.program(**inputs) if self.by_keyword else self.program(*inputs.values())


def _input_values(program: torch.export.ExportedProgram) -> list[tuple[str, torch.Tensor]]:
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    values = []
    for name in program.graph_signature.user_inputs:
        val = placeholders[name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise InvalidModelError(f"the program's input {name!r} is not a tensor")
        values.append((name, val))
    return values


def _keyword_inputs(program: torch.export.ExportedProgram) -> list[str]:
    """The names the program takes as keyword arguments (its call spec is (args, kwargs))."""
    kwargs = program.call_spec.in_spec.child(1)
    return list(kwargs.context or []) if kwargs.type is dict else []


def _program_spec(values: list[tuple[str, torch.Tensor]]) -> InputSpec:
    shapes = [tuple(int(d) if isinstance(d, int) else None for d in v.shape) for _, v in values]
    return spec_of_inputs(
        [n for n, _ in values],
        shapes,
        [v.dtype for _, v in values],
        [f"{n} {str(v.dtype).removeprefix('torch.')} {list(s)}" for (n, v), s in zip(values, shapes)],
    )


def load_pt2(path: Path) -> LoadedModel:
    # int8 programs (PT2E) call quantized_decomposed ops, which exist only once this module registered them;
    # without it a fresh process cannot deserialize an int8 artifact
    import torch.ao.quantization.fx._decomposed  # noqa: F401

    torch_reads_the_same(path)  # one archive, read one way (contract/zip_check.py)
    check_pt2_file(path)  # refuses anything the loader would unpickle or run, before it reads a byte of it
    try:
        with weights_only_torch_load():  # a second belt: torch.load as the loader calls it takes only tensors
            program = torch.export.load(str(path))
    except Exception as e:  # the loader raises many types for bad archives
        raise InvalidModelError(f"cannot load this torch.export program: {type(e).__name__}: {e}") from None
    values = _input_values(program)
    if not values:
        raise InvalidModelError("the program takes no tensor input")
    spec = _program_spec(values)
    module = program.module()
    facts = FormatFacts()
    if is_packed(module):  # pruned weights stored sparse: rebuilt once here, not on every call
        facts.sparse_weights_rebuilt = fold_packed_weights(module)
    # exported programs are captured in inference mode and refuse .eval(); the flag tells exporters so
    module.training = False
    if spec.names:
        module = PackedProgram(module, spec.names, by_keyword=bool(_keyword_inputs(program)))
        module.training = False
    return LoadedModel(
        module=module,
        format=ModelFormat.PT2,
        input_spec=spec,
        size_bytes=path.stat().st_size,
        runtime=Runtime.EAGER,
        path=path,
        facts=facts,
    )


class NamedInputs(nn.Module):
    """A module fed one packed tensor (InputSpec.names), exported with its inputs as separate arguments named
    as the model names them: the artifact then takes `input_ids`, `attention_mask`, ... as the original did,
    not the engine's packing. The names reach torch.export (and the ONNX exporter) through the signature."""

    def __init__(self, packed: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.packed = packed
        self.training = packed.training
        # per instance: torch.export reads the argument names from inspect.signature(module.forward)
        self.forward = functools.partial(type(self)._stacked, self)
        self.forward.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
        )

    def _stacked(self, *args: torch.Tensor, **kwargs: torch.Tensor):
        bound = self.forward.__signature__.bind(*args, **kwargs)  # by position or by name, as a caller likes
        return self.packed(torch.stack(list(bound.arguments.values()), 1))


def export_arguments(
    module: nn.Module, spec: InputSpec, *, artifact: bool = True
) -> tuple[nn.Module, tuple, dict, tuple | dict]:
    """What an exporter is given: the module, example arguments (positional, keyword) and their dynamic
    dimensions.

    For an artifact (a file a user runs): the batch and every dimension the model leaves dynamic (a text
    model's sequence length), and packed named inputs as named arguments when every name can be one (ONNX
    names such as 'input.1' cannot). For a graph the engine works on (PT2E quantization): the packed tensor,
    as every method is fed, with the same dynamic dimensions, so that its artifact keeps them."""
    auto = torch.export.Dim.AUTO
    example = spec.example(EXAMPLE_BATCH).to(module_device(module))
    names = spec.names or ()
    if artifact and names and all(n.isidentifier() and not keyword.iskeyword(n) for n in names):
        # by keyword, as Hugging Face users call models: `program.module()(**tokenizer(texts, ...))`
        dynamic = {0: auto, **{i: auto for i, d in enumerate(spec.shape[2:], start=1) if d is None}}
        kwargs = {name: example[:, i] for i, name in enumerate(names)}
        return NamedInputs(module, names), (), kwargs, dict.fromkeys(names, dynamic)
    dynamic = {0: auto, **{i: auto for i, d in enumerate(spec.shape[1:], start=1) if d is None}}
    return module, (example,), {}, (dynamic,)


def export_program(module: nn.Module, spec: InputSpec, *, artifact: bool = False) -> torch.export.ExportedProgram:
    """Exports with a dynamic batch dimension where the model allows one; an artifact also keeps the model's
    other dynamic dimensions and its named inputs (export_arguments). Dim.AUTO: what the graph fixes stays fixed."""
    exported, args, kwargs, dynamic = export_arguments(module, spec, artifact=artifact)
    try:
        return torch.export.export(exported, args, kwargs, dynamic_shapes=dynamic, strict=False)
    except Exception as e:
        raise InvalidModelError(f"torch.export failed on this model: {type(e).__name__}: {e}") from None


# node metadata that only serves debugging: source stack traces (which would also publish the worker's
# file paths) and pass provenance; dropping them keeps small programs from being mostly JSON
DEBUG_META = ("stack_trace", "from_node")


def save_pt2(module: nn.Module, spec: InputSpec, path: Path) -> Path:
    program = export_program(module, spec, artifact=True)
    for node in program.graph.nodes:
        for key in DEBUG_META:
            node.meta.pop(key, None)
    # the random tracing input would be saved too (1.2 MB for a 224x224 model) and serves no one
    program.example_inputs = None
    torch.export.save(program, str(path))
    _compress_json(path)
    return path


def _compress_json(path: Path) -> None:
    """torch.export.save stores every entry uncompressed. The program's JSON (graph, tensor metadata)
    deflates about 8x, and in an int8 graph, with a quantize/dequantize pair per layer, it is a large part
    of a small model's file (55 KB of 87 KB for the digits CNN). Weights stay stored as they are; torch's
    zip reader inflates the rest."""
    import zipfile

    packed = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(packed, "w") as target:
        for info in source.infolist():
            deflate = info.filename.endswith(".json")
            target.writestr(
                info, source.read(info), compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            )
    packed.replace(path)
