"""Where a student comes from: an architecture name, another uploaded model, or the teacher itself made
narrower (structured pruning) or shallower (every k-th layer of a Hugging Face encoder)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..contract.errors import RecipeError
from ..contract.formats import EAGER_FORMATS, EDITABLE_FORMATS
from ..contract.recipe.distill import DistillStep
from ..formats import LoadedModel, load_model
from ..formats.spec import module_device
from ..formats.weights import build_architecture
from ..measure.metrics import first_tensor
from ..pruning.layers import always_kept, editable
from ..pruning.structured import remove_channels, role_summary, unchanged_layers, weight_shapes

TRAINABLE = EAGER_FORMATS


def build_student(
    step: DistillStep, teacher: LoadedModel, models: dict, example: torch.Tensor
) -> tuple[nn.Module, list[str]]:
    """The untrained (or teacher-initialised) student, and notes on how it was made."""
    spec = step.student
    torch.manual_seed(step.seed)
    if spec.arch is not None:
        module, _ = build_architecture(spec.arch, spec.kwargs)
        return module, [f"student: {spec.arch} {spec.kwargs or ''}".strip()]
    if spec.model_id is not None:
        path = models.get(spec.model_id)
        if path is None:
            raise RecipeError(f"student model {spec.model_id} was not provided to this run")
        loaded = load_model(path)
        if loaded.format not in TRAINABLE:
            raise RecipeError(
                f"a {loaded.format} student cannot be trained; upload it as a .pt2 program or safetensors weights"
            )
        return editable(loaded), [f"student: uploaded model {spec.model_id}"]
    if teacher.format not in EDITABLE_FORMATS:
        raise RecipeError(f"a student cannot be derived from a {teacher.format} teacher; give arch or model_id")
    source = editable(teacher)  # lifting keeps the teacher's outputs exactly; ONNX is converted and checked
    if spec.derive.width is not None:
        student = copy.deepcopy(source)
        kept, kept_notes = always_kept(teacher, student, example, structured=True)
        shapes = weight_shapes(student)
        try:
            bad = remove_channels(student, example, 1 - spec.derive.width, sorted(kept))
        except ValueError as e:
            raise RecipeError(f"derive width: {e}; give the student as arch or model_id instead") from None
        notes = [f"student: the teacher with {spec.derive.width:.0%} of its channels (structured pruning)", *kept_notes]
        if bad:
            by_reason: dict[str, list[str]] = {}
            for name, why in bad.items():
                by_reason.setdefault(why, []).append(name)
            notes.append(
                "kept at the teacher's width because narrowing them breaks the model: "
                + "; ".join(f"{role_summary(names)} ({why})" for why, names in by_reason.items())
            )
        if coupled := unchanged_layers(shapes, student, set(bad) | set(kept)):
            notes.append(
                "also at the teacher's width (coupled to layers kept whole, or too narrow to lose a channel): "
                + role_summary(coupled)
            )
        return student, notes
    return _fewer_layers(teacher, source, spec.derive.layers)


def _fewer_layers(teacher: LoadedModel, source: nn.Module, keep: int) -> tuple[nn.Module, list[str]]:
    """DistilBERT-style initialisation: the encoder's layer stack keeps `keep` evenly spaced layers."""
    student = copy.deepcopy(source)
    config = getattr(getattr(student, "model", None), "config", None)
    total = getattr(config, "num_hidden_layers", None)
    stacks = [
        (name, m)
        for name, m in student.named_modules()
        if isinstance(m, nn.ModuleList) and total and len(m) == total and len({type(b) for b in m}) == 1
    ]
    if not stacks:
        raise RecipeError("derive layers needs a Hugging Face encoder with a stack of num_hidden_layers layers")
    if keep >= total:
        raise RecipeError(f"derive layers {keep}: the teacher has only {total} layers")
    name, stack = stacks[0]
    picks = [round(i * (total - 1) / max(1, keep - 1)) for i in range(keep)] if keep > 1 else [0]
    owner, _, leaf = name.rpartition(".")
    setattr(student.get_submodule(owner) if owner else student, leaf, nn.ModuleList([stack[i] for i in picks]))
    config.num_hidden_layers = keep
    return student, [f"student: the teacher's layers {picks} of {total} ({name})"]


def check_outputs(student: nn.Module, teacher: LoadedModel, example: torch.Tensor) -> None:
    """Refuses, before any training, a student whose outputs cannot be compared with the teacher's."""
    with torch.no_grad():
        t = first_tensor(teacher.module(example.to(module_device(teacher.module))))
        try:
            s = first_tensor(student.eval()(example.to(module_device(student))))
        except Exception as e:
            raise RecipeError(
                f"the student does not run on the teacher's input {list(example.shape)}: {type(e).__name__}: {e}"
            ) from None
    if tuple(s.shape[1:]) != tuple(t.shape[1:]):
        raise RecipeError(
            f"the student's output shape {[None, *s.shape[1:]]} does not match the teacher's {[None, *t.shape[1:]]}"
            + ("; set the number of classes in kwargs (e.g. num_classes)" if s.ndim == 2 else "")
        )
