"""An ONNX upload as PyTorch layers, so it can be pruned, narrowed into a student and fine-tuned like any
eager model (README "Recipes": `prune` options). onnx2torch (ENOT's converter) builds a torch.fx graph of real
Conv2d / Linear / BatchNorm modules from the ONNX graph; it is used rather than a converter of our own
because it covers the operators of the opsets real models ship with (up to 17), with tests per operator.
The converted graph must give onnxruntime's outputs on the model's own example input before anything is
built on it."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..contract.errors import InvalidModelError, RecipeError, short_error
from .spec import InputSpec, LoadedModel, module_device

# outputs of the converted graph against onnxruntime's, relative to the outputs' scale (at least FLOOR: an
# example input of noise can leave a detector's probabilities all near zero)
TOLERANCE = 1e-3
FLOOR = 1e-2
_UNSUPPORTED = re.compile(r"operation_type='(\w+)', version=(\d+)")


class ConvertedOnnx(nn.Module):
    """The converted graph and what it came from. Saved back to ONNX by the TorchScript exporter, for which
    onnx2torch's modules carry their own ONNX export; the dynamo exporter goes through torch.export, which
    some of them fail (a Slice that reads its bounds with .numpy())."""

    def __init__(self, layers: nn.Module, input_name: str, output_names: list[str], opset: int, metadata: dict):
        super().__init__()
        # not `graph`: an exported program's module has a `graph` of its own, which the name would shadow
        self.layers, self.input_name, self.output_names, self.opset = layers, input_name, output_names, opset
        self.metadata = metadata  # the upload's metadata_props (class names, strides): the artifact keeps them

    def forward(self, x: torch.Tensor):
        return self.layers(x)

    def save_onnx(self, spec: InputSpec, path: Path) -> Path:
        import onnx

        _opset_where_onnx2torch_reads_it()
        example = spec.example(2).to(module_device(self))
        with torch.inference_mode():
            outputs = _tensors(self(example))
        names = self.output_names
        if len(names) != len(outputs):
            names = [f"output_{i}" for i in range(len(outputs))]
        # exported under placeholder names, renamed after: the TorchScript exporter refuses names that are
        # numbers ("Invalid name: '537'"), which older exporters gave every tensor (centerface's outputs)
        tag = uuid.uuid4().hex[:8]
        placeholders = [f"squeeze_{tag}_input", *[f"squeeze_{tag}_output_{i}" for i in range(len(names))]]
        dynamic = {placeholders[0]: {i: f"d{i}" for i, d in enumerate(spec.shape) if d is None}}
        dynamic |= {name: {0: "d0"} for name in placeholders[1:]}
        try:
            torch.onnx.export(
                self.eval(), (example,), str(path), dynamo=False, opset_version=min(max(self.opset, 13), 17),
                input_names=placeholders[:1], output_names=placeholders[1:], dynamic_axes=dynamic,
            )
        except Exception as e:
            raise InvalidModelError(f"ONNX export failed: {short_error(e)}") from None
        proto = onnx.load(str(path), load_external_data=False)  # a large model's weights stay where they are
        rename_values(proto.graph, dict(zip(placeholders, [self.input_name, *names])))
        if self.metadata:
            onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **self.metadata})
        onnx.save(proto, str(path))
        return path


def rename_values(graph, renames: dict[str, str]) -> None:
    """Renames tensors of an ONNX graph everywhere they are named, all at once. A tensor that already has
    one of the new names (exporters number their tensors: '537' may be taken) is given a free name first.
    The TorchScript exporter writes no subgraphs (If/Loop bodies) for a traced module, so only the top
    graph is walked."""
    names = {v for n in graph.node for v in (*n.input, *n.output)}
    names |= {v.name for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)}
    mapping = dict(renames)
    for new in set(renames.values()):
        if new in names and new not in renames:
            spare = new
            while spare in names or spare in mapping.values():
                spare += "_"
            mapping[new] = spare
    for node in graph.node:
        node.input[:] = [mapping.get(v, v) for v in node.input]
        node.output[:] = [mapping.get(v, v) for v in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = mapping.get(value.name, value.name)


def _opset_where_onnx2torch_reads_it() -> None:
    """onnx2torch's layers (Shape, Squeeze, Reduce*, ...) emit their own ONNX node while exporting and read
    the export's opset from `torch.onnx.symbolic_helper.GLOBALS`, which torch 2.14's compatibility module
    no longer re-exports: without it the export fails with an AttributeError. The object itself is still
    there, where the TorchScript exporter sets the opset."""
    from torch.onnx import symbolic_helper

    if not hasattr(symbolic_helper, "GLOBALS"):
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

        symbolic_helper.GLOBALS = GLOBALS


def onnx_as_torch(model: LoadedModel) -> ConvertedOnnx:
    """The upload's graph as PyTorch layers in eval mode, checked against onnxruntime."""
    import onnx
    import onnx2torch

    spec = model.require_spec()
    if len(model.module.input_names) > 1:
        raise RecipeError(
            f"this ONNX model takes {len(model.module.input_names)} inputs; only single-input ONNX models can be "
            "pruned or distilled here: quantize it, or upload it as a .pt2 program"
        )
    proto = onnx.load(str(model.path))
    _constants_as_initializers(proto)
    try:
        module = onnx2torch.convert(proto)
    except NotImplementedError as e:
        found = _UNSUPPORTED.search(str(e))
        what = f"has no converter for {found[1]} (opset {found[2]})" if found else f"says: {short_error(e)}"
        raise RecipeError(
            f"this ONNX model cannot be turned into PyTorch layers: onnx2torch {what}; "
            "quantize it, or upload it as a .pt2 program (opsets up to 17 are covered)"
        ) from None
    except Exception as e:  # a graph the converter misreads
        raise RecipeError(
            f"this ONNX model cannot be turned into PyTorch layers ({short_error(e)}); "
            "quantize it, or upload it as a .pt2 program"
        ) from None
    _identifier_names(module)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    outputs = [o.name for o in model.module.session.get_outputs()]
    metadata = {p.key: p.value for p in proto.metadata_props}
    converted = ConvertedOnnx(module, model.module.input_name, outputs, opset, metadata).eval()
    _check_outputs(model, converted, spec.example(2))
    return converted


def _constants_as_initializers(proto) -> None:
    """Weights the exporter left as Constant nodes, or as Identity copies of another weight (the
    TorchScript exporter shares equal biases that way), become initializers: onnx2torch reads a layer's
    weights from initializers only."""
    from onnx import numpy_helper

    weights = {t.name: t for t in proto.graph.initializer}
    kept = []
    for node in proto.graph.node:
        if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
            tensor = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in weights:
            tensor = numpy_helper.to_array(weights[node.input[0]])
        else:
            kept.append(node)
            continue
        weights[node.output[0]] = numpy_helper.from_array(tensor, node.output[0])
        proto.graph.initializer.append(weights[node.output[0]])
    del proto.graph.node[:]
    proto.graph.node.extend(kept)


def _identifier_names(graph: torch.fx.GraphModule) -> None:
    """onnx2torch names each layer after its ONNX node ('/features/features.0/Conv' becomes
    'features/features/0/Conv'); a .pt2 saved from such names cannot be loaded back (torch.export reads the
    '/' as nothing it knows), so the layers are renamed to identifiers, in place."""
    renamed: dict[str, str] = {}
    for name in list(graph._modules):
        if name.isidentifier():
            continue
        new = re.sub(r"\W+", "_", name).strip("_") or "layer"
        while (
            not new.isidentifier() or new in graph._modules or new in renamed.values() or hasattr(type(graph), new)
        ):
            new = f"layer_{new}"
        renamed[name] = new
    if not renamed:
        return
    graph._modules = {renamed.get(name, name): module for name, module in graph._modules.items()}
    for node in graph.graph.nodes:
        if node.op == "call_module":
            head, dot, rest = node.target.partition(".")
            node.target = renamed.get(head, head) + dot + rest
    graph.recompile()


def _check_outputs(model: LoadedModel, module: nn.Module, example: torch.Tensor) -> None:
    with torch.inference_mode():
        expected = _tensors(model.module(example))
        try:
            got = _tensors(module(example))
        except Exception as e:
            raise RecipeError(
                f"the PyTorch graph converted from this ONNX model fails where onnxruntime runs it "
                f"({short_error(e)}); quantize it, or upload it as a .pt2 program"
            ) from None
    if len(expected) != len(got):
        raise RecipeError(
            f"the PyTorch graph converted from this ONNX model returns {len(got)} outputs, not {len(expected)}; "
            "quantize it, or upload it as a .pt2 program"
        )
    for i, (want, have) in enumerate(zip(expected, got)):
        want, have = want.float(), have.float()
        scale = float(want.abs().max()) if want.numel() else 0.0
        diff = float((want - have).abs().max()) if want.shape == have.shape and want.numel() else 0.0
        if want.shape != have.shape:
            diff = np.inf
        if not diff <= TOLERANCE * max(scale, FLOOR):
            raise RecipeError(
                f"the PyTorch graph converted from this ONNX model differs from onnxruntime on output {i} "
                f"(largest difference {diff:.3g} against values up to {scale:.3g}); quantize it, or upload it "
                "as a .pt2 program"
            )


def _tensors(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    return [t for item in output for t in _tensors(item)]
