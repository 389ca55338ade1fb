"""A bad recipe, parameter or format is refused before any work, with a message that says what to change."""

from __future__ import annotations

import re

import pytest
import torch
from pydantic import ValidationError

from tests.engine import run_recipe
from workers.compression import RecipeError, catalogue, parse_recipe


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"steps": [{"method": "shrink"}]}, "unknown method 'shrink'; available: quantize, prune, distill, export"),
        ({"steps": [{"method": "quantize", "scheme": "int3"}]}, "steps.0.scheme: Input should be"),
        ({"steps": [{"method": "quantize", "scheme": "fp16", "colour": "red"}]}, "colour"),
        ({"steps": [{"scheme": "fp16"}]}, "needs a 'method'"),
        ({"steps": []}, "at least 1"),
        ({"stages": []}, "steps"),
        ([1, 2], "a recipe is a JSON object"),
    ],
)
def test_invalid_recipes(recipe, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_recipe(recipe)


def test_unsupported_format_is_refused_before_any_work(cnn, tmp_path):
    path = tmp_path / "cnn.ts"
    torch.jit.save(torch.jit.trace(cnn, torch.zeros(2, 1, 8, 8)), str(path))
    out = tmp_path / "out"
    with pytest.raises(RecipeError, match="step 1 \\(quantize int8_dynamic\\) does not accept torchscript models"):
        run_recipe(path, {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}, out_dir=out)
    assert not any(out.iterdir())


def test_format_is_followed_through_the_recipe(cnn_pt2, tmp_path):
    recipe = {"steps": [{"method": "export", "format": "onnx"}, {"method": "quantize", "scheme": "fp16"}]}
    with pytest.raises(RecipeError, match="step 2 \\(quantize fp16\\) does not accept onnx"):
        run_recipe(cnn_pt2, recipe, out_dir=tmp_path)


def test_orders_that_cannot_work_are_refused_before_any_work():
    from workers.compression.contract.recipe import check_recipe
    from workers.compression.formats import ModelFormat

    int8_then_onnx = parse_recipe(
        {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}, {"method": "export", "format": "onnx"}]}
    )
    with pytest.raises(RecipeError, match="step 2 \\(export onnx\\): a PyTorch int8 program cannot be exported"):
        check_recipe(int8_then_onnx, ModelFormat.PT2)
    onnx_then_int8 = parse_recipe(
        {"steps": [{"method": "export", "format": "onnx"}, {"method": "quantize", "scheme": "int8_dynamic"}]}
    )
    assert check_recipe(onnx_then_int8, ModelFormat.PT2) == ["onnx", "onnx"]
    int8_then_torchscript = parse_recipe(
        {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}, {"method": "export", "format": "torchscript"}]}
    )
    assert check_recipe(int8_then_torchscript, ModelFormat.PT2) == ["pt2", "torchscript"]


def test_catalogue_lists_schemas_and_formats():
    methods = {m["method"]: m for m in catalogue()}
    assert set(methods) == {"quantize", "prune", "distill", "export", "auto"}
    auto = methods["auto"]
    assert auto["schema"]["properties"]["objective"]["enum"] == ["latency", "size", "balanced"]
    assert sorted(auto["formats"]["method"]["auto"]) == ["gguf", "huggingface", "onnx", "pt2", "safetensors"]
    schemes = ["int8_dynamic", "int8_static", "int8_qat", "int8_weight_only", "int4_weight_only", "fp16", "bf16"]
    assert methods["quantize"]["schema"]["properties"]["scheme"]["enum"] == [*schemes, "binary", "ternary"]
    formats = methods["quantize"]["formats"]["scheme"]
    assert "onnx" in formats["int8_dynamic"] and "onnx" in formats["int8_static"]
    assert "onnx" not in formats["int8_qat"] and "onnx" not in formats["binary"]
    assert "torchscript" not in formats["int8_dynamic"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful on a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_up_front(cnn_pt2, tmp_path):
    from workers.compression import EngineError, MeasureSettings

    with pytest.raises(EngineError, match="no CUDA GPU"):
        run_recipe(
            cnn_pt2,
            {"steps": [{"method": "quantize", "scheme": "fp16"}]},
            out_dir=tmp_path,
            settings=MeasureSettings(device="cuda"),
        )


def test_a_recipe_says_itself_in_a_few_words_for_the_job_list():
    from app.jobs.schemas import Headline, recipe_summary

    pipeline = {
        "steps": [
            {"method": "prune", "kind": "structured", "sparsity": 0.3},
            {"method": "distill", "student": {"derive": {"width": 0.5}}, "epochs": 4},
            {"method": "quantize", "scheme": "int8_dynamic"},
            {"method": "export", "format": "onnx"},
        ]
    }
    assert recipe_summary(pipeline) == (
        "prune structured 30% → distill into width 0.5, 4 epochs → quantize int8_dynamic → export onnx"
    )
    auto = {"steps": [{"method": "auto", "objective": "size", "max_accuracy_drop": 0.005, "budget_minutes": 5}]}
    assert recipe_summary(auto) == "auto: size, accuracy within 0.5 pt, 5 min"
    # stored recipes are in the current shape (migrations bring older rows to it): nothing is guessed at
    with pytest.raises(ValidationError):
        recipe_summary({"steps": [{"method": "quantize", "scheme": "int3"}]})
    # a row without a report has no headline
    assert Headline.of(None) is None and Headline.of({"partial": True}) is None


def _lm(params: int, task: str | None = "causal_lm"):
    from workers.compression.contract.inspection import ModelInfo

    return ModelInfo(format="huggingface", runtime="eager", size_bytes=4 * params, params=params,
                     nonzero_params=params, task=task)


def _text(chars: int):
    from workers.compression.contract.inspection import DatasetInfo

    return DatasetInfo(samples=32, labels=False, text=True, text_chars=chars)


@pytest.mark.parametrize(
    "step",
    [
        {"method": "prune", "kind": "structured", "sparsity": 0.3},
        {"method": "distill", "student": {"derive": {"width": 0.5}}},
    ],
)
def test_re_training_a_language_model_on_too_little_text_is_refused_with_the_estimate(step):
    """SmolLM2-135M on 32 paragraphs (about 20 k characters): refused before it runs, with the tokens and the
    time it would need; with enough text, or a method that needs no training, or a model that is not a
    language model, the recipe passes."""
    from workers.compression.contract.recipe import check_recipe

    recipe = parse_recipe({"steps": [step]})
    with pytest.raises(RecipeError, match=r"needs about [\d.]+ [Mk] tokens of text .* this dataset has about 5 k") as e:
        check_recipe(recipe, "huggingface", model_info=_lm(135_000_000), data_info=_text(20_000))
    assert re.search(r"about \d+ (hours|minutes) of training", e.value.message), e.value.message
    assert "quantize it instead" in e.value.message
    check_recipe(recipe, "huggingface", model_info=_lm(135_000_000), data_info=_text(4 * 3_000_000))
    check_recipe(recipe, "huggingface", model_info=_lm(135_000_000, task=None), data_info=_text(20_000))
    check_recipe(recipe, "huggingface", model_info=_lm(135_000_000))  # the text's size unknown: not judged
    quantize = parse_recipe({"steps": [{"method": "quantize", "scheme": "int4_weight_only"}]})
    check_recipe(quantize, "huggingface", model_info=_lm(135_000_000), data_info=_text(20_000))
