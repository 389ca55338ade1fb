"""Static and one-shot figures: parameter counts, MACs, peak memory, output quality, environment."""

from __future__ import annotations

import os
import platform
import threading
import time
from importlib import metadata

import torch
from torch import nn

from ..contract.vocabulary import Device
from ..formats.onnx import OnnxModule
from ..formats.packed import SPARSE_BITS as BITS
from ..formats.packed import SPARSE_SHAPE as SHAPE
from ..formats.packed import SPARSE_VALUES as VALUES
from ..hardware import cpu_features, cpu_has_vnni, cpu_model

# tensors that are not weights: normalisation statistics and quantization parameters
_NOT_WEIGHTS = ("running_mean", "running_var", "num_batches_tracked", "_scale", "_zero_point", "zero_point", "scale")


def weight_tensors(module: nn.Module) -> list[torch.Tensor]:
    return [t for _, t in named_weight_tensors(module)]


def uncompiled(module: nn.Module) -> nn.Module:
    """The module behind a torch.compile wrapper (runtime inductor): its weights and FLOPs are the same."""
    return getattr(module, "_orig_mod", module)


def named_weight_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    module = uncompiled(module)
    if isinstance(module, OnnxModule):
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(module.model_path), load_external_data=True)
        return [
            (t.name, torch.from_numpy(numpy_helper.to_array(t).copy()))
            for t in proto.graph.initializer
            if not t.name.endswith(_NOT_WEIGHTS) and len(t.dims) > 0
        ]
    seen: set[int] = set()
    out = []
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if name.endswith(_NOT_WEIGHTS) or t.ndim == 0 or id(t) in seen:
            continue
        seen.add(id(t))
        out.append((name, t.detach()))
    # graph modules keep quantized weights as plain tensor attributes, not parameters or buffers
    if isinstance(module, torch.fx.GraphModule):
        for node in module.graph.nodes:
            if node.op == "get_attr" and not node.target.endswith(_NOT_WEIGHTS):
                t = _get_attr(module, node.target)
                if isinstance(t, torch.Tensor) and t.ndim > 0 and id(t) not in seen:
                    seen.add(id(t))
                    out.append((node.target, t.detach()))
    return out


def _get_attr(module: nn.Module, target: str):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj


def count_params(module: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters). A weight stored sparse (bitmask + values, pruning/storage.py)
    counts as its dense tensor, with its stored values as the non-zeros."""
    total = nonzero = 0
    for name, t in named_weight_tensors(module):
        if name.endswith(SHAPE):
            total += int(t.prod())
        elif name.endswith(VALUES):
            nonzero += int(torch.count_nonzero(t))
        elif not name.endswith(BITS):
            total += t.numel()
            nonzero += int(torch.count_nonzero(t))
    return total, nonzero


def count_macs(module: nn.Module, example: torch.Tensor) -> int | None:
    """MACs of one forward on `example` (batch 1), from torch's FLOP counter (flops / 2)."""
    if isinstance(module, OnnxModule):
        return None  # onnxruntime runs outside the dispatcher: nothing to count
    from torch.utils.flop_counter import FlopCounterMode

    module = uncompiled(module)
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            module(example)
    except Exception:
        return None
    return int(counter.get_total_flops()) // 2


def peak_memory(module: nn.Module, example: torch.Tensor, device: str) -> int | None:
    """Peak bytes held during one forward on `example`: weights plus activations."""
    if device == Device.CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.inference_mode():
            module(example)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base + sum(t.nbytes for t in weight_tensors(module)))
    if isinstance(module, OnnxModule):
        return _rss_growth(lambda: module(example))
    return _profiled_peak(module, example)


def _profiled_peak(module: nn.Module, example: torch.Tensor) -> int | None:
    # The CPU allocator has no peak counter; torch's profiler records every allocation and free, and its
    # memory timeline (private API, pinned torch) gives the peak of live tensors including the weights.
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    try:
        with (
            torch.inference_mode(),
            profile(
                activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
            ) as prof,
        ):
            module(example)
        _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
        peak = max(sum(row) for row in sizes) if sizes else 0
    except Exception:
        return None
    return int(peak) if peak > 0 else None


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_growth(fn) -> int | None:
    """Runtimes outside torch (onnxruntime): the resident-set high-water above the level before the call,
    sampled every millisecond. Approximate: allocator caching can hide growth."""
    if not os.path.exists("/proc/self/statm"):
        return None
    before = _rss_bytes()
    peak = before
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(0, peak - before)


def all_tensors(output) -> list[torch.Tensor]:
    """Every tensor a model returns, in order (tuples, lists, dicts and Hugging Face outputs flattened)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in all_tensors(item)]
    return []


def outputs_over(model, x: torch.Tensor, batch: int, device: str = "cpu") -> list[torch.Tensor]:
    """Every output of `model` over `x` in batches (a detector's heads, a face model's box, landmarks and
    score), float32 on the CPU; the first only, if batches disagree on how many there are."""
    parts: list[list[torch.Tensor]] = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            parts.append([o.float().cpu() for o in all_tensors(model(x[i : i + batch].to(device)))])
    if len({len(p) for p in parts}) != 1:
        return [torch.cat([p[0] for p in parts])]
    return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]


def first_tensor(output) -> torch.Tensor:
    while isinstance(output, (tuple, list)):
        output = output[0]
    if isinstance(output, dict):
        output = next(iter(output.values()))
    return output


def environment(device: str, threads: int) -> dict:
    versions = {}
    for pkg in ("torch", "torchvision", "torchao", "onnx", "onnxruntime", "openvino", "nncf", "transformers", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    env = {
        "cpu": cpu_model(),
        "cpu_vnni": cpu_has_vnni(),
        "cpu_features": cpu_features(),  # read at run time: machines of one kind differ
        "threads": threads,
        "python": platform.python_version(),
        "versions": versions,
    }
    if device == Device.CUDA:
        env["gpu"] = torch.cuda.get_device_name()
    return env
