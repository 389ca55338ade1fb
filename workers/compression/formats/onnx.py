"""ONNX models, run with onnxruntime."""

from __future__ import annotations

import copy
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..contract.errors import InvalidModelError
from ..contract.inspection import FormatFacts
from ..contract.vocabulary import Device, Runtime
from .archive import extract_zip
from .exported import export_arguments
from .onnx_torch import ConvertedOnnx
from .spec import InputSpec, LoadedModel, ModelFormat, check_input_names, spec_of_inputs

ONNX_TO_TORCH = {
    "tensor(float)": torch.float32,
    "tensor(float16)": torch.float16,
    "tensor(double)": torch.float64,
    "tensor(int64)": torch.int64,
    "tensor(int32)": torch.int32,
    "tensor(bool)": torch.bool,
}


NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def onnx_feed(x: np.ndarray, names: tuple[str, ...], types: dict) -> dict[str, np.ndarray]:
    """A session's feed from the engine's tensor: one input as it is, several unpacked from dimension 1 by
    name; each cast to the type the session wants (datasets hold int64 ids and float32, a model may want int32)."""
    parts = [x] if len(names) == 1 else [x[:, i] for i in range(len(names))]
    feed = {}
    for name, part in zip(names, parts):
        want = types.get(name)
        feed[name] = np.ascontiguousarray(part if want is None or part.dtype == want else part.astype(want))
    return feed


class OnnxModule(nn.Module):
    """Wraps an onnxruntime session so measurement and later steps can call it like a module."""

    def __init__(self, model_path: Path, *, threads: int | None = None, device: str = "cpu"):
        super().__init__()
        self.model_path, self.device, self.threads = Path(model_path), device, threads
        self.session = self._session(threads)
        self.input_name = self.session.get_inputs()[0].name
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        # what each input must be as numpy: datasets hold int64 ids and float32, a model may want int32
        self.input_types = {i.name: NUMPY_TYPES.get(i.type) for i in self.session.get_inputs()}
        self.packed_names: tuple[str, ...] | None = self.input_names if len(self.input_names) > 1 else None

    def bind_inputs(self, names: tuple[str, ...]) -> None:
        """Which entry of dimension 1 is which input: an ONNX session needs every input, by name."""
        check_input_names(names, self.input_names, self.input_names)
        self.packed_names = names

    def set_threads(self, threads: int) -> None:
        """onnxruntime fixes a session's threads when it is made: a new session for another count."""
        if threads != self.threads:
            self.session, self.threads = self._session(threads), threads

    def _session(self, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # onnxruntime's worker threads spin for a while after each run; on a small machine that steals the
        # cores from whatever runs next (the next model in an interleaved timing round), so they sleep instead
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if self.device == Device.CUDA and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        return ort.InferenceSession(str(self.model_path), options, providers=providers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = onnx_feed(x.detach().cpu().numpy(), self.packed_names or (self.input_name,), self.input_types)
        outs = [torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feed)]
        return outs[0] if len(outs) == 1 else tuple(outs)  # every head of a detector, as torch models return them


def _check_external_data(model, base: Path) -> None:
    """External tensors must live inside the upload: no absolute paths, no `..`, nothing missing."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    base = base.resolve()
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if not location or not target.is_relative_to(base):
            raise InvalidModelError(
                f"ONNX tensor {tensor.name!r} points at external data {location!r} outside the upload; "
                "zip the .onnx file together with its data files"
            )
        if not target.is_file():
            raise InvalidModelError(
                f"ONNX tensor {tensor.name!r} needs external data file {location!r}, which the upload does not contain"
            )


def load_onnx(path: Path, *, threads: int | None = None, device: str = "cpu") -> LoadedModel:
    import onnx

    model_path, workdir = path, None
    if zipfile.is_zipfile(path):
        # zipped .onnx + external data files: extracted to a folder that lives as long as the module
        workdir = tempfile.TemporaryDirectory(prefix="squeeze-onnx-")
        folder = extract_zip(path, Path(workdir.name))
        found = list(folder.rglob("*.onnx"))
        if len(found) != 1:
            raise InvalidModelError(f"the archive must hold exactly one .onnx file, found {len(found)}")
        model_path = found[0]
    try:
        proto = onnx.load(str(model_path), load_external_data=False)
    except Exception as e:
        raise InvalidModelError(f"cannot parse this ONNX model: {type(e).__name__}: {e}") from None
    _check_external_data(proto, model_path.parent)
    notes = []
    if (fixed := _fixed_batch(proto)) is not None:
        if workdir is None:
            workdir = tempfile.TemporaryDirectory(prefix="squeeze-onnx-")
        model_path = Path(workdir.name) / "batch_dynamic.onnx"
        onnx.save(proto, str(model_path))
        notes.append(
            f"the model's batch dimension was fixed at {fixed}; it is run with a dynamic batch (measured at 1 and N)"
        )
    try:
        module = OnnxModule(model_path, threads=threads, device=device)
    except Exception as e:
        raise InvalidModelError(f"onnxruntime cannot load this model: {type(e).__name__}: {e}") from None
    module.workdir = workdir  # removed when the module is garbage-collected
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    return LoadedModel(
        module=module,
        format=ModelFormat.ONNX,
        input_spec=_input_spec(module.session.get_inputs()),
        size_bytes=path.stat().st_size,
        runtime=Runtime.ONNXRUNTIME,
        path=model_path,
        facts=FormatFacts(opsets=opsets, producer=proto.producer_name, notes=notes),
    )


BATCH_DIM = "batch"


def _fixed_batch(proto) -> int | None:
    """Makes a batch dimension the exporter fixed (10 for CenterFace, 1 for many) dynamic in place, as the
    models' own packages do at load; returns the fixed size, or None when the batch already was dynamic.
    Only models whose every input and output is batched along dimension 0 at that size are changed; a graph
    that hard-codes the batch inside (a Reshape to it) then fails at the first run with a batch of another
    size, and says so there. Models with external data are left as they are (they would be rewritten whole)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]  # old exporters list weights as inputs
    tensors = [*inputs, *proto.graph.output]
    dims = [t.type.tensor_type.shape.dim for t in tensors]
    if not inputs or any(len(d) == 0 for d in dims):
        return None
    sizes = {d[0].dim_value if d[0].HasField("dim_value") else None for d in dims}
    if len(sizes) != 1 or None in sizes or any(uses_external_data(t) for t in _get_all_tensors(proto)):
        return None
    for d in dims:
        d[0].ClearField("dim_value")
        d[0].dim_param = BATCH_DIM
    return sizes.pop()


def _input_spec(inputs) -> InputSpec:
    for i in inputs:
        if i.type not in ONNX_TO_TORCH:
            raise InvalidModelError(f"unsupported ONNX input type {i.type} (input {i.name!r})")
    return spec_of_inputs(
        [i.name for i in inputs],
        [tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape) for i in inputs],
        [ONNX_TO_TORCH[i.type] for i in inputs],
        [f"{i.name} {i.type} {list(i.shape)}" for i in inputs],
    )


def bf16_tensors(module: nn.Module) -> list[str]:
    """The module's bf16 parameters, buffers and graph constants (a model may keep e.g. its RoPE tables in bf16)."""
    names = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.dtype == torch.bfloat16]
    for prefix, sub in module.named_modules():
        names += [
            f"{prefix}.{k}".lstrip(".")
            for k, v in vars(sub).items()
            if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter) and v.dtype == torch.bfloat16
        ]
    return names


def _bf16_as_fp32(module: nn.Module) -> nn.Module:
    """A copy whose bf16 tensors are fp32: onnxruntime's CPU provider has no bf16 kernel for most operators
    (a bf16 `Neg` fails the session), and every bf16 value is exact in fp32, so a computation PyTorch
    promotes to fp32 anyway (bf16 table x fp32 activations) gives the same result."""
    if not bf16_tensors(module):
        return module
    module = copy.deepcopy(module)
    for sub in module.modules():
        for name, p in sub._parameters.items():
            if p is not None and p.dtype == torch.bfloat16:
                p.data = p.data.float()
        for name, b in sub._buffers.items():
            if b is not None and b.dtype == torch.bfloat16:
                sub._buffers[name] = b.float()
        for name, v in list(vars(sub).items()):
            if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter) and v.dtype == torch.bfloat16:
                setattr(sub, name, v.float())
    return module


def _reuse_the_torchlib_registry() -> None:
    """torch.onnx's exporter rebuilds its table of ATen -> ONNX functions from onnxscript's torchlib on every
    export: measured on a 2-core EPYC, the digits CNN's second and third exports in one process took 1.12 s and
    0.72 s, and 0.76 s and 0.49 s with the table kept; a job exports several times (the export step, each
    runtime's int8 path, the runtime baselines), and the suite hundreds of times. The
    table depends only on the opset and is read, not changed, while exporting (it is changed only for a
    `custom_translation_table`, which this project never passes), so one per opset is built and kept. torch
    2.14 builds it in `_compat.export_compat` through `ONNXRegistry.from_torchlib`; where that is not so,
    nothing is patched and every export builds its own, as before."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return
    registry = getattr(_registration, "ONNXRegistry", None)
    build = getattr(registry, "from_torchlib", None)
    if build is None or getattr(build, "squeeze_cached", False):
        return
    built: dict = {}

    def from_torchlib(opset_version=_registration._constants.TORCHLIB_OPSET):
        if opset_version not in built:
            built[opset_version] = build(opset_version=opset_version)
        return built[opset_version]

    from_torchlib.squeeze_cached = True
    registry.from_torchlib = staticmethod(from_torchlib)


def save_onnx(module: nn.Module, spec: InputSpec, path: Path) -> Path:
    if isinstance(module, ConvertedOnnx):
        return module.save_onnx(spec, path)
    exported, args, kwargs, dynamic = export_arguments(_bf16_as_fp32(module), spec)
    _reuse_the_torchlib_registry()
    try:
        program = torch.onnx.export(
            exported,
            args,
            kwargs=kwargs,
            dynamic_shapes=dynamic,
            dynamo=True,
            verbose=False,
        )
        program.save(str(path), external_data=False)
    except Exception as e:
        raise InvalidModelError(f"ONNX export failed: {type(e).__name__}: {e}") from None
    return path
