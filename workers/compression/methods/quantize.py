"""`quantize`: lower-precision weights (and activations) for a smaller, and where the runtime allows,
faster model. One verb, one typed config; the scheme picks the technique, the runtime what executes it.

Every int8/low-bit scheme goes through the same loop: build a candidate with some layers kept in full
precision, score it, and let the accuracy guard (quantization/guard.py) decide which layers to keep."""

from __future__ import annotations

import shutil
import tempfile
from fnmatch import fnmatchcase
from pathlib import Path

import torch
from torch import nn

from ..contract.errors import StepFailedError
from ..contract.recipe.quantize import RECOMMEND_BUDGET, QuantizeConfig
from ..contract.vocabulary import Device, Runtime
from ..formats import LoadedModel, ModelFormat, save_model
from ..hardware import cpu_has_vnni
from ..measure.metrics import weight_tensors
from ..measure.quality import within_budget
from ..pruning.layers import editable, execution_order
from ..quantization.backends import fp32_onnx, onnx_backend, torch_backends
from ..quantization.candidates import Backend, TorchCandidate, calibration_batches, on_each_runtime
from ..quantization.guard import Guarded, Scorer, guard
from ..quantization.onnx_int8 import WEIGHTLESS_OPS
from ..quantization.openvino_int8 import openvino_backend
from ..quantization.packed import packed_layer_bytes
from ..quantization.peers import build_peers
from ..step import StepContext, StepOutput


class CastInputs(nn.Module):
    """Runs a half-precision model behind the original fp32 interface: float inputs are cast in,
    outputs are cast back to fp32, so the artifact is a drop-in replacement."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner = inner
        self.dtype = dtype
        # inference wrapper; set directly because .eval() recurses and exported programs refuse train()/eval()
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            x = x.to(self.dtype)
        from torch.utils._pytree import tree_map

        # every output back to float32 (a multi-output model returns a tuple)
        return tree_map(
            lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, self.inner(x)
        )


def quantize(model: LoadedModel, step: QuantizeConfig, ctx: StepContext) -> StepOutput:
    if step.scheme in ("fp16", "bf16"):
        return _half(model, step, ctx)
    work = Path(tempfile.mkdtemp(prefix="squeeze-quantize-", dir=ctx.out_dir))
    try:
        return _quantize(model, step, ctx, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _quantize(model: LoadedModel, step: QuantizeConfig, ctx: StepContext, work: Path) -> StepOutput:
    spec = model.require_spec()
    data = ctx.eval_data or ctx.data
    scorer = Scorer.over(data, model.module, model) if data is not None else None
    if model.format == ModelFormat.ONNX:
        backends = onnx_model_backends(model, step, ctx, scorer, work)
        kept: list[str] = []
    else:
        module = editable(model).to(ctx.device)
        order = execution_order(module, spec.example(1))
        if not order:
            raise StepFailedError(f"{step.scheme} found no Linear or Conv layer to quantize in this model")
        kept = [n for n in order if any(fnmatchcase(n, p) for p in step.exclude)]
        if step.scheme in ("binary", "ternary") and step.keep_first_last:
            kept += [n for n in dict.fromkeys([order[0], order[-1]]) if n not in kept]
        backends = torch_backends(module, spec, order, step, ctx, scorer, work)

    budget, required = guard_budget(step, ctx)

    def guarded(backend: Backend) -> tuple[Backend, Guarded, list[str]]:
        i = next(k for k, b in enumerate(backends) if b is backend)
        ctx.progress(i / len(backends), f"{step.scheme} on {backend.runtime}")
        layer_kept = [n for n in backend.layers if n in kept or any(fnmatchcase(n, p) for p in step.exclude)]
        if scorer is None:  # nothing to score on: quantize every layer that is not excluded
            return backend, Guarded(backend.build(frozenset(layer_kept), False), None, [], True), layer_kept
        found = guard(
            backend.build,
            backend.candidates,
            scorer,
            budget,
            kept=layer_kept,
            progress=lambda f, s, r=backend.runtime: ctx.progress(i / len(backends), f"{r}: {s}"),
        )
        return backend, found, layer_kept

    outcomes, failed = on_each_runtime(
        backends, guarded, lambda backend, why: f"{backend.runtime} failed on this model: {why}"
    )
    if not outcomes:
        raise StepFailedError(f"{step.scheme} failed on every runtime: " + "; ".join(failed))
    results = [_result(b, g, kept_now, step, ctx) for b, g, kept_now in outcomes]
    for result in results:  # whichever is recommended names the runtimes that failed
        result.notes.extend(failed)
    met = [r for r, (_, g, _) in zip(results, outcomes) if g.met]
    primary = met[0] if met else max(results, key=lambda r: r.details["guard"].get("quality") or 0.0)
    if not met:
        guard_info = primary.details["guard"]
        drop = guard_info["baseline"] - guard_info["quality"]
        kept_names = ", ".join(guard_info.get("kept_full_precision") or []) or "no layer"
        if required:
            primary.failure = (
                f"{step.scheme} cannot meet max_accuracy_drop {budget}: the best candidate ({kept_names} kept in "
                f"full precision) loses {drop:.5f} {guard_info['metric']}; it is stored for inspection"
            )
        else:
            primary.notes.append(
                f"{step.scheme} loses {drop:.5f} {guard_info['metric']}, over the default budget {budget}, and "
                "no mix of layers kept in full precision held it: the least damaged candidate "
                f"({kept_names} kept in full precision) is kept (set max_accuracy_drop to require a budget; the "
                "step then fails instead)"
            )
    elif not required:  # said on the runtimes whose guard kept something, not on one that kept nothing
        for result in results:
            if result.details["guard"].get("kept_full_precision"):
                result.notes.append(
                    "no max_accuracy_drop was set: the guard kept layers in full precision to stay within the "
                    f"default budget {budget}"
                )
    if step.scheme.startswith("int8") and not cpu_has_vnni():
        primary.notes.append(
            "this CPU has no VNNI (int8 dot products): int8 kernels here multiply through wider registers and "
            "may be no faster than fp32; the measurement says which"
        )
    primary.alternatives = [r for r in results if r is not primary]
    if getattr(step, "compare_peers", False):
        primary.alternatives += _peers(model, step, ctx, work, primary)
    return primary


# int8 is what users run without thinking of a budget; the aggressive schemes (int4, binary, ternary) are
# chosen for size, and QAT trains its way back: those are guarded only when the recipe asks
DEFAULT_GUARDED = ("int8_static", "int8_dynamic", "int8_weight_only")


def guard_budget(step: QuantizeConfig, ctx: StepContext) -> tuple[float | None, bool]:
    """The accuracy drop the guard holds the step to, and whether it is required (the recipe's
    max_accuracy_drop: the step fails without it) or the default (RECOMMEND_BUDGET: kept where possible,
    a note where not)."""
    if step.max_accuracy_drop is not None:
        return step.max_accuracy_drop, True
    if ctx.default_guard and step.scheme in DEFAULT_GUARDED:
        return RECOMMEND_BUDGET, False
    return None, False


def onnx_model_backends(model: LoadedModel, step: QuantizeConfig, ctx: StepContext, scorer, work: Path) -> list:
    """An ONNX upload: onnxruntime, and for int8_static OpenVINO (NNCF) too, as the step's runtime allows."""
    names = getattr(model.module, "packed_names", None)
    runtime = getattr(step, "runtime", "auto")
    wanted = [r for r in (Runtime.ONNXRUNTIME, Runtime.OPENVINO) if runtime in ("auto", r)]
    if step.scheme != "int8_static":
        wanted = [Runtime.ONNXRUNTIME]
    makers = {
        Runtime.ONNXRUNTIME: lambda: onnx_backend(model.path, step, ctx, scorer, work, names),
        Runtime.OPENVINO: lambda: openvino_backend(model.path, step, ctx, scorer, work, names),
    }
    built, failed = on_each_runtime(wanted, lambda r: makers[r](), lambda r, why: f"{r} could not quantize it: {why}")
    if not built:
        raise StepFailedError("; ".join(failed))
    for backend in built:
        backend.notes.extend(failed)
    return built


def _peers(model: LoadedModel, step: QuantizeConfig, ctx: StepContext, work: Path, primary: StepOutput) -> list:
    """The field's one-call recipes on the same fp32 ONNX form and calibration batches (quantization/peers.py)."""
    if ctx.data is None:
        return []
    source = model.path if model.format == ModelFormat.ONNX else fp32_onnx(editable(model), model.require_spec(), work)
    names = model.require_spec().names or getattr(model.module, "packed_names", None)
    batches = [x.cpu().numpy() for x in calibration_batches(ctx.data, step.calibration_batches, "cpu")]
    ctx.progress(0.95, "building the peers' int8 (onnxruntime quantize_static, NNCF)")
    built, failed = build_peers(source, batches, work, names)
    primary.notes.extend(failed)
    out = []
    for peer, path, runtime, fmt in built:
        target = ctx.artifact_path(fmt, f"peer_{runtime}")
        shutil.copyfile(path, target)
        out.append(StepOutput(target, fmt, [f"peer: {peer}, every option at its default"], runtime=runtime, peer=peer))
    return out


def _result(backend: Backend, guarded: Guarded, kept: list[str], step: QuantizeConfig, ctx: StepContext) -> StepOutput:
    path = ctx.artifact_path(backend.format, f"{step.scheme}_{backend.runtime}")
    guarded.built.save(path)
    full_precision = sorted(set(kept) | set(guarded.kept))
    notes = list(backend.notes)
    if guarded.kept:
        notes.append(
            f"accuracy guard kept the {len(guarded.kept)} most sensitive layer(s) in full precision: "
            + ", ".join(guarded.kept)
        )
    if WEIGHTLESS_OPS in guarded.kept:
        notes.append(
            f"the {WEIGHTLESS_OPS} (Add, Mul, pooling...) stay in float: only the layers' inputs and weights are int8"
            + (
                "; float runs in f32, not bf16 (the artifact asks for it; where you compile it yourself, pass "
                "{'INFERENCE_PRECISION_HINT': 'f32'})"
                if backend.runtime == Runtime.OPENVINO
                else ""
            )
        )
    details = {
        **backend.details,
        **_weight_bytes(guarded.built),
        "runtime": backend.runtime,
        "layers_quantized": len([n for n in backend.layers if n not in full_precision]),
        "layers_full_precision": full_precision,
        "guard": guarded.details or {"quality": guarded.quality},
    }
    return StepOutput(path, backend.format, notes, details, runtime=backend.runtime)


def _weight_bytes(built) -> dict:
    """What the candidate stores: packed low-bit layers (bytes before and after) and int8 weight tensors."""
    if not isinstance(built, TorchCandidate):
        return {}
    out = {}
    counted = packed_layer_bytes(built.saved)
    if counted["layers"]:
        out["quantized_weights"] = counted
    int8 = [t for t in weight_tensors(built.saved) if t.dtype == torch.int8]
    if int8:
        convs = sum(1 for t in int8 if t.ndim > 2)
        out["int8_weights"] = {"conv": convs, "linear": len(int8) - convs}
    return out


# ---------------------------------------------------------------- half precision


def _half(model: LoadedModel, step: QuantizeConfig, ctx: StepContext) -> StepOutput:
    from ..contract.recipe.quantize import output_format

    fmt = output_format(step, model.format)
    path = ctx.artifact_path(fmt, step.scheme)
    dtype = torch.float16 if step.scheme == "fp16" else torch.bfloat16
    data = ctx.eval_data or ctx.data
    scorer = Scorer.over(data, model.module, model) if data is not None and step.max_accuracy_drop is not None else None
    model.module.to(dtype)
    wrapped = CastInputs(model.module, dtype)
    save_model(wrapped, model.require_spec(), fmt, path)
    notes = [f"weights and compute in {step.scheme}; inputs and outputs stay fp32"]
    if ctx.device == Device.CPU:
        notes.append(
            f"{step.scheme} compute on CPU is only fast with native half-precision units; see the measured latency"
        )
    result = StepOutput(path, fmt, notes)
    if scorer is not None:
        quality = scorer(wrapped)
        met = within_budget(scorer.baseline - quality, step.max_accuracy_drop)
        result.details["guard"] = {
            "metric": scorer.metric,
            "baseline": scorer.baseline,
            "quality": quality,
            "budget": step.max_accuracy_drop,
            "met": met,
        }
        if not met:
            # half precision has no per-layer fallback here: the whole model is cast
            result.failure = (
                f"{step.scheme} loses {scorer.baseline - quality:.4f} {scorer.metric}, over "
                f"max_accuracy_drop {step.max_accuracy_drop}; the artifact is stored for inspection"
            )
    return result
