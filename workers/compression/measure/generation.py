"""How fast a causal language model generates, as its users measure it (docs/measurement.md): greedy
generation of `new_tokens` after a prompt of `prompt_tokens` real tokens from the evaluation text, timed in
interleaved rounds like latency. Prefill is the prompt's forward pass up to the first new token (so its time
is also the time to first token); decode is every token after that, one forward pass each.

A model that keeps a key/value cache (a Hugging Face model run eagerly) decodes each token from the cache;
one that does not (an exported program, an ONNX graph without cache inputs) recomputes the whole sequence
for every token, and the measurement says so (`kv_cache: false`): that is what a user running that file gets.
Written here rather than taken from transformers' `generate` because `generate` only drives Hugging Face
models, and the artifacts beside the baseline are exported programs, ONNX and OpenVINO graphs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..contract.measure import Generation
from ..formats.huggingface import HuggingFaceOutputs
from ..formats.spec import LoadedModel
from .timing import median_interval


@dataclass
class Prompt:
    """One prompt of real tokens, shaped as the model's input takes it (packed with its mask where the
    model takes named inputs)."""

    ids: torch.Tensor  # [1, prompt_tokens]
    names: tuple[str, ...] | None

    @classmethod
    def of(cls, eval_x: torch.Tensor, names: tuple[str, ...] | None, tokens: int) -> Prompt | None:
        """The first `tokens` real tokens of the longest evaluation text (fewer when no text has so many)."""
        ids, mask = token_ids_and_mask(eval_x, names)
        if ids.ndim != 2 or not len(ids):
            return None
        lengths = mask.sum(1)
        row = int(lengths.argmax())
        real = ids[row][mask[row].bool()][:tokens]
        return cls(real[None].clone(), names) if len(real) >= 2 else None

    def packed(self, ids: torch.Tensor) -> torch.Tensor:
        """`ids` as the model's input: alone, or packed along dimension 1 with what each other named input
        means for one unpadded text (a mask of ones, positions 0..L-1, token types 0)."""
        if not self.names:
            return ids
        filler = {
            "attention_mask": lambda: torch.ones_like(ids),
            "position_ids": lambda: torch.arange(ids.shape[1], device=ids.device).expand_as(ids),
            "token_type_ids": lambda: torch.zeros_like(ids),
        }
        return torch.stack([filler[n]() if n in filler else ids for n in self.names], 1)


def token_ids_and_mask(x: torch.Tensor, names: tuple[str, ...] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, mask) out of a language model's input, packed or not."""
    if not names:
        return x, torch.ones_like(x)
    ids = x[:, names.index("input_ids")] if "input_ids" in names else x[:, 0]
    mask = x[:, names.index("attention_mask")] if "attention_mask" in names else torch.ones_like(ids)
    return ids, mask


def _cache_model(model: LoadedModel):
    """The Hugging Face model behind a baseline that can decode from a key/value cache, else None."""
    module = model.module
    if isinstance(module, HuggingFaceOutputs) and hasattr(module.model, "generate"):
        return module.model
    return None


def generate_once(model: LoadedModel, prompt: Prompt, new_tokens: int) -> tuple[float, float, list[int]]:
    """(prefill seconds, decode seconds, the generated token ids), greedy."""
    hf = _cache_model(model)
    with torch.inference_mode():
        start = time.perf_counter()
        if hf is not None:
            out = hf(input_ids=prompt.ids, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            past = out.past_key_values
        else:
            ids = prompt.ids
            token = _last_logits(model.module(prompt.packed(ids))).argmax(-1, keepdim=True)
        tokens = [int(token)]  # reading it waits for the device, so the prefill's time is all in
        prefilled = time.perf_counter()
        for _ in range(new_tokens - 1):
            if hf is not None:
                out = hf(input_ids=token, past_key_values=past, use_cache=True)
                token, past = out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values
            else:
                ids = torch.cat([ids, token], 1)
                token = _last_logits(model.module(prompt.packed(ids))).argmax(-1, keepdim=True)
            tokens.append(int(token))
        done = time.perf_counter()
    return prefilled - start, done - prefilled, tokens


def _last_logits(out) -> torch.Tensor:
    logits = out if isinstance(out, torch.Tensor) else out[0]
    return logits[:, -1].float()


def measure_generation(
    models: list[LoadedModel],
    eval_x: torch.Tensor,
    names: tuple[str, ...] | None,
    *,
    prompt_tokens: int,
    new_tokens: int,
    rounds: int,
    progress: Callable[[str], None] = lambda s: None,
) -> tuple[list[Generation | None], list[dict[str, tuple[float, tuple[float, float]]]]]:
    """Each model's generation speed, and per model its decode / prefill speedups against models[0] (median of
    per-round ratios with their 95 % interval). A model that cannot generate (a program exported for one
    sequence length) gets None."""
    longest = models[0].facts.max_sequence_length or 2**31
    prompt = Prompt.of(eval_x, names, min(prompt_tokens, longest // 2))
    if prompt is None:
        return [None] * len(models), [{} for _ in models]
    new_tokens = max(2, min(new_tokens, longest - prompt.ids.shape[1]))
    why_not: dict[int, str] = {}
    times: dict[int, list[tuple[float, float]]] = {}
    for i, m in enumerate(models):
        try:
            generate_once(m, prompt, new_tokens)  # a warm-up, and whether it takes the growing sequence at all
            times[i] = []
        except Exception as e:
            why_not[i] = f"{type(e).__name__}: {str(e)[:200]}"
    for r in range(rounds):
        progress(f"generating, round {r + 1} of {rounds}")
        for i in list(times):  # interleaved: each round times every model once, so drift hits all alike
            try:
                prefill, decode, _ = generate_once(models[i], prompt, new_tokens)
            except Exception as e:  # out of memory mid-rounds, say: this model's figures only are lost
                why_not[i] = f"{type(e).__name__}: {str(e)[:200]}"
                del times[i]
                continue
            times[i].append((prefill, decode))
    able = sorted(times)
    generations: list[Generation | None] = [None] * len(models)
    for i in able:
        prefill = [prompt.ids.shape[1] / p for p, _ in times[i]]
        decode = [(new_tokens - 1) / d for _, d in times[i]]
        ttft = [p * 1000 for p, _ in times[i]]
        (p50, p_ci), (d50, d_ci), (t50, t_ci) = (median_interval(v) for v in (prefill, decode, ttft))
        generations[i] = Generation(
            prompt_tokens=prompt.ids.shape[1],
            new_tokens=new_tokens,
            kv_cache=_cache_model(models[i]) is not None,
            rounds=rounds,
            prefill_tokens_per_s=p50,
            decode_tokens_per_s=d50,
            ttft_ms=t50,
            ci95={"prefill_tokens_per_s": p_ci, "decode_tokens_per_s": d_ci, "ttft_ms": t_ci},
        )
    for i, why in why_not.items():
        progress(f"model {i} could not generate: {why}")
    speedups: list[dict] = [{} for _ in models]
    if 0 in times:
        for i in able[1:]:
            for key, k in (("decode", 1), ("prefill", 0)):
                speedups[i][key] = median_interval([b[k] / c[k] for b, c in zip(times[0], times[i])])
    return generations, speedups
