"""GGUF, the file most small language models are shared in (llama.cpp's format): sniffed from its bytes, read
by transformers with the `gguf` package (weights dequantized to float32, the tokenizer from its metadata),
then inspected, measured (perplexity, tokens/s) and compressed like a zipped Hugging Face checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workers.compression import UnsupportedFormatError, run_recipe
from workers.compression.contract.errors import InvalidModelError
from workers.compression.contract.sniff import detect_format
from workers.compression.formats import load_model
from workers.compression.inspection import inspect_model


def tiny_llama_gguf(path, *, hidden: int = 32, layers: int = 2, heads: int = 2, ffn: int = 64, seed: int = 0):
    """A two-block Llama as llama.cpp writes one (its tensor names, its metadata keys), random float32 weights,
    and a byte-level BPE tokenizer of the 256 byte symbols and an end-of-text token (written with `gguf`)."""
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = [*bytes_to_unicode().values(), "<|endoftext|>"]
    vocab, rng = len(tokens), np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_rope_dimension_count(hidden // heads)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (vocab - 1) + [3])  # 3: a control token
    w.add_token_scores([0.0] * vocab)
    w.add_bos_token_id(vocab - 1)
    w.add_eos_token_id(vocab - 1)

    def weight(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    weight("token_embd.weight", vocab, hidden)
    for i in range(layers):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            weight(f"blk.{i}.{name}.weight", hidden, hidden)
        weight(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        weight(f"blk.{i}.ffn_up.weight", ffn, hidden)
        weight(f"blk.{i}.ffn_down.weight", hidden, ffn)
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    weight("output.weight", vocab, hidden)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


PROSE = [
    "The model is uploaded, inspected in a sandbox and measured beside the original on the same machine.",
    "Quantization stores weights in fewer bits; the perplexity on the user's text says what it cost.",
    "A language model decodes one token at a time, so its speed is counted in tokens per second.",
] * 8


def test_a_gguf_language_model_is_read_inspected_and_judged_by_perplexity(tmp_path, quick):
    path = tiny_llama_gguf(tmp_path / "tiny.gguf")
    assert detect_format(path) == "gguf"
    model = load_model(path)
    assert model.format == "gguf" and model.facts.task == "causal_lm" and model.tokenizer is not None
    info = inspect_model(path)
    assert info.format == "gguf" and info.arch == "LlamaForCausalLM" and info.tokenizer is True
    assert info.params >= sum(p.numel() for p in model.module.parameters()) > 30_000  # the 2 blocks' weights
    assert any(layer.name == "model.lm_head" and layer.out == 257 for layer in info.layers)

    data = tmp_path / "prose.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in PROSE))
    recipe = {"steps": [{"method": "quantize", "scheme": "int8_weight_only"}]}
    report = run_recipe(path, recipe, data_path=data, out_dir=tmp_path / "out", settings=quick)
    base, measured = report.baseline, report.steps[0].measurement
    # random weights over 257 byte tokens: perplexity near the vocabulary size, and int8 weights keep it
    assert 100 < base.perplexity < 1000, base
    assert abs(measured.perplexity / base.perplexity - 1) < 0.05, (base.perplexity, measured.perplexity)
    assert report.data.tokenization.pad_token == "eos"  # the GGUF's own tokenizer has no padding token
    assert base.generation is not None and base.generation.decode_tokens_per_s > 0  # decoded from its cache
    assert (tmp_path / "out" / report.steps[0].artifact_id).stat().st_size > 0


def test_a_gguf_that_is_not_one_says_so(tmp_path):
    wrong_version = tmp_path / "v9.gguf"
    wrong_version.write_bytes(b"GGUF" + (9).to_bytes(4, "little") + bytes(64))
    with pytest.raises(UnsupportedFormatError, match="states version 9; GGUF versions 2 and 3"):
        detect_format(wrong_version)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(tiny_llama_gguf(tmp_path / "whole.gguf").read_bytes()[:5000])
    with pytest.raises(InvalidModelError, match="cannot load the GGUF model") as caught:
        load_model(truncated)
    assert str(tmp_path) not in caught.value.message


def test_a_gguf_upload_is_inspected_in_the_sandbox_as_a_language_model(prod_stack, tmp_path):
    from tests.stack import upload, wait_ready

    with prod_stack.client() as c:
        r = upload(c, "models", tiny_llama_gguf(tmp_path / "tiny.gguf"))
        assert r.status_code == 201 and r.json()["format"] == "gguf", r.text
        model = wait_ready(c, "models", r.json()["id"])
    assert model["status"] == "ready", model
    info = model["info"]
    assert info["format"] == "gguf" and info["task"] == "causal_lm" and info["tokenizer"] is True, info
    assert info["isolation"]["mode"] == "bwrap"


def test_auto_ranks_a_language_models_candidates_by_decode_tokens_per_second(tmp_path, quick):
    """For a language model `auto` times each candidate's decoding and ranks by it (the speed its users wait
    on, and what its verdict is judged on): every measured artifact carries speedup_decode, the front's speed is
    it, and the recommendation says so."""
    path = tiny_llama_gguf(tmp_path / "tiny.gguf")
    data = tmp_path / "prose.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in PROSE))
    recipe = {
        "steps": [{"method": "auto", "max_accuracy_drop": 0.05, "budget_minutes": 0.75, "techniques": ["quantize"],
                   "runtimes": ["eager"]}]
    }
    report = run_recipe(path, recipe, data_path=data, out_dir=tmp_path / "out", settings=quick)
    step = report.steps[0]
    measured = [a for c in step.search.candidates for a in (c.artifacts or [])]
    assert measured and all(a.speedup_decode and a.speedup_decode > 0 for a in measured), measured
    assert "(speed: decode tokens/s)" in step.recommendation_reason, step.recommendation_reason
    assert report.final.speedup_decode is not None  # the final measurement decodes too
