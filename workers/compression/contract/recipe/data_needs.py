"""What re-training a language model needs before a job starts: structured (width) pruning and a student
derived from a causal LM must re-learn what they remove, and a few paragraphs cannot teach it. The zoo's
SmolLM2-135M, pruned 30 % and fine-tuned on 32 paragraphs, ended at perplexity 8,098 (from 87 on the same
text); a student derived from it at 15,962. Such a job is refused at submission with the estimate.

The floor is an order of magnitude, not a promise: text tokens at least 1 % of the parameters the step
removes. LLM-Pruner (Ma et al., 2023) recovered a LLaMA-7B pruned by 20 % (about 1.3 B parameters) on about
10 M tokens (50 k Alpaca samples) and still lost quality; Sheared-LLaMA and Minitron spent billions. The time
is training's 6 x parameters x tokens floating-point operations at TRAIN_FLOPS, about what 2 CPU cores
sustain for a small transformer's training step: a hint of scale, said as such. Torch-free (contract)."""

from __future__ import annotations

from pydantic import BaseModel

from ..inspection import DatasetInfo, ModelInfo
from .distill import DistillStep
from .prune import PruneStep

TOKENS_PER_REMOVED_PARAM = 0.01
CHARS_PER_TOKEN = 4  # English text under a BPE tokenizer, about
TRAIN_FLOPS = 5e10  # floating-point operations a second while training, 2 CPU cores


def removed_fraction(step: BaseModel) -> float | None:
    """The share of a language model's parameters that a step removes and training must make up for: width
    pruning's channels (a width w keeps about w^2 of each matrix), a derived student's channels or layers."""
    if isinstance(step, PruneStep) and step.kind == "structured":
        return step.sparsity if step.sparsity is not None else (step.target_macs_reduction or 0.5)
    if isinstance(step, DistillStep) and step.student.derive is not None:
        if step.student.derive.width is not None:
            return 1 - step.student.derive.width**2
        return None  # a layer count: its share needs the model's depth, which inspection does not record
    return None


def recovery_shortfall(step: BaseModel, model: ModelInfo, data: DatasetInfo | None) -> str | None:
    """Why this step cannot recover this language model on this text, with the estimate; None when it can
    (or when it is not a language model re-learning what it loses, or the text's size is unknown)."""
    if model.task != "causal_lm" or data is None or not data.text_chars:
        return None
    fraction = removed_fraction(step)
    if not fraction:
        return None
    removed = model.params * fraction
    needed = removed * TOKENS_PER_REMOVED_PARAM
    have = data.text_chars / CHARS_PER_TOKEN
    if have >= needed:
        return None
    hours = 6 * model.params * (1 - fraction) * needed / TRAIN_FLOPS / 3600
    return (
        f"a language model of {model.params / 1e6:.0f} M parameters that loses about {removed / 1e6:.0f} M of them "
        f"needs about {_tokens(needed)} tokens of text to re-learn them (at least 1 % of what it loses; LLM-Pruner "
        f"recovered a 20 %-pruned LLaMA-7B on about 10 M and still lost quality) and, at that, about "
        f"{_duration(hours)} of training on 2 CPU cores; this dataset has about {_tokens(have)} tokens "
        f"({data.samples} texts). Give it more text, or quantize it instead: int8 and int4 weight-only keep a "
        "language model's perplexity without any training"
    )


def _tokens(n: float) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k" if n >= 1e3 else f"{n:.0f}"


def _duration(hours: float) -> str:
    return f"{hours:.0f} hours" if hours >= 1.5 else f"{max(1, round(hours * 60))} minutes"
