"""Zipped Hugging Face checkpoints (config.json + *.safetensors) and GGUF language models, loaded offline by
transformers, never with remote code."""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from pathlib import Path, PurePosixPath

import torch
from torch import nn

from ..contract.errors import InvalidModelError
from ..contract.inspection import FormatFacts
from ..contract.vocabulary import Runtime
from .archive import extract_zip
from .spec import InputSpec, LoadedModel, ModelFormat, check_input_names

DEFAULT_SEQUENCE_LENGTH = 128
# forward arguments that are switches or caches, never data a dataset holds
NOT_INPUTS = {"labels", "return_dict", "output_attentions", "output_hidden_states", "use_cache", "past_key_values",
              "inputs_embeds", "head_mask", "kwargs", "cache_position", "return_loss", "interpolate_pos_encoding"}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model", "vocab.json")


class HuggingFaceOutputs(nn.Module):
    """Calls the model with its main input (`input_ids`, `pixel_values`), or with the dataset's named inputs
    unpacked from dimension 1 once bound, and returns its main tensor (logits, else the last hidden state)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.main_input = getattr(model, "main_input_name", "input_ids")
        params = inspect.signature(model.forward).parameters
        self.accepted = tuple(n for n, p in params.items() if n not in NOT_INPUTS and p.kind != p.VAR_KEYWORD)
        self.packed_names: tuple[str, ...] | None = None

    def bind_inputs(self, names: tuple[str, ...]) -> None:
        check_input_names(names, self.accepted, (self.main_input,))
        self.packed_names = names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed_names is None:
            out = self.model(**{self.main_input: x})
        else:
            out = self.model(**{name: x[:, i] for i, name in enumerate(self.packed_names)})
        for key in ("logits", "last_hidden_state"):
            value = getattr(out, key, None)
            if value is not None:
                return value
        return out[0]


def load_huggingface(path: Path, *, sequence_length: int | None = None) -> LoadedModel:
    # the hub is never reached: all files come from the upload
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # the weights are read into memory, so the extracted folder goes away as soon as loading ends
    with tempfile.TemporaryDirectory(prefix="squeeze-hf-") as workdir:
        model, config, tokenizer = _load_folder(extract_zip(path, Path(workdir)))
    return _loaded(model, config, tokenizer, path, ModelFormat.HUGGINGFACE, sequence_length)


def load_gguf(path: Path, *, sequence_length: int | None = None) -> LoadedModel:
    """A language model as llama.cpp shares it: transformers reads its config, tokenizer and weights from the
    GGUF's metadata and tensors (with the `gguf` package; no code, no pickle) and dequantizes the weights to
    float32, so it is measured and compressed as the Hugging Face model it describes."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    where = dict(gguf_file=path.name, local_files_only=True, trust_remote_code=False)
    try:
        config = transformers.AutoConfig.from_pretrained(path.parent, **where)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            path.parent, config=config, dtype=torch.float32, **where
        )
    except Exception as e:  # an architecture transformers cannot read from GGUF, a truncated or corrupt file
        raise InvalidModelError(f"cannot load the GGUF model: {type(e).__name__}: {_first_line(e)}") from None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, **where)
    except Exception as e:
        raise InvalidModelError(f"cannot build the GGUF's tokenizer: {type(e).__name__}: {_first_line(e)}") from None
    # the weights are plain float32 now: without its GGUF quantizer the model saves and exports as any other
    model.hf_quantizer, model.is_quantized = None, False
    for holder in (model.config, config):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    return _loaded(model, config, tokenizer, path, ModelFormat.GGUF, sequence_length)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:500]


def _loaded(model, config, tokenizer, path: Path, format: ModelFormat, sequence_length: int | None) -> LoadedModel:
    if getattr(model.config, "use_cache", False):  # the key/value cache serves generation, not one forward pass
        model.config.use_cache = False
    module = HuggingFaceOutputs(model.eval())
    facts = FormatFacts(arch=type(model).__name__, model_type=config.model_type, tokenizer=tokenizer is not None)
    if type(model).__name__.endswith("ForCausalLM"):
        facts.task = "causal_lm"
    if module.main_input == "pixel_values":  # image models (ViT-style): channels x size x size
        size = getattr(config, "image_size", 224)
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        spec = InputSpec(shape=(None, getattr(config, "num_channels", 3), *size))
    else:
        # the sequence length is dynamic: a dataset's own length is used; examples take the default
        longest = getattr(config, "max_position_embeddings", 512) or 512
        seq = sequence_length or min(DEFAULT_SEQUENCE_LENGTH, longest)
        facts.max_sequence_length = longest
        spec = InputSpec(
            shape=(None, sequence_length), dtype=torch.int64, high=getattr(config, "vocab_size", None), sizes=(seq,)
        )
    if tokenizer is not None:
        from .tokenizer import Tokenizer

        tokenizer = Tokenizer(tokenizer, facts.max_sequence_length or 512, _label_names(config))
    return LoadedModel(
        module=module,
        format=format,
        input_spec=spec,
        size_bytes=path.stat().st_size,
        runtime=Runtime.EAGER,
        path=path,
        facts=facts,
        tokenizer=tokenizer,
    )


def _label_names(config) -> list[str] | None:
    """The classifier's own class names, when the config gives real ones (not LABEL_0, LABEL_1, ...)."""
    names = [config.id2label[i] for i in sorted(config.id2label)] if getattr(config, "id2label", None) else []
    return names if names and not all(n == f"LABEL_{i}" for i, n in enumerate(names)) else None


def _load_folder(folder: Path):
    import transformers

    # the model's config sits beside its weights (sentence-transformers folders add 1_Pooling/config.json)
    configs = [c for c in folder.rglob("config.json") if any(c.parent.glob("*.safetensors"))]
    if len(configs) != 1:
        raise InvalidModelError(
            f"the archive must hold one config.json beside *.safetensors weights, found {len(configs)}"
        )
    folder = configs[0].parent
    try:
        raw = json.loads(configs[0].read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidModelError(f"config.json is not valid JSON: {e}") from None
    if "auto_map" in raw:
        raise InvalidModelError("this checkpoint needs custom code (auto_map in config.json); remote code is never run")
    for index in folder.glob("*.index.json"):
        _check_shard_index(folder, index)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception as e:
        raise InvalidModelError(f"cannot read config.json: {type(e).__name__}: {e}") from None
    arch = (config.architectures or [None])[0]
    model_class = getattr(transformers, arch, None) if arch else None
    if not (isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)):
        model_class = transformers.AutoModel
    try:
        model = model_class.from_pretrained(
            folder, config=config, local_files_only=True, trust_remote_code=False, use_safetensors=True
        )
    except Exception as e:
        raise InvalidModelError(f"cannot load the checkpoint: {type(e).__name__}: {e}") from None
    return model, config, _load_tokenizer(folder)


def _check_shard_index(folder: Path, index: Path) -> None:
    """A sharded checkpoint's index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`) names the
    file of every weight: each must be a plain file name in the folder, checked like an archive member is
    (no `..`, no absolute path, no sub-folder, no link), before transformers opens any of them."""
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise InvalidModelError(f"{index.name} is not a valid shard index: {e}") from None
    if not isinstance(weight_map, dict):
        raise InvalidModelError(f"{index.name} has no weight_map")
    for weight, shard in weight_map.items():
        path = PurePosixPath(str(shard))
        if not isinstance(shard, str) or len(path.parts) != 1 or path.name in ("", ".", "..") or "\\" in shard:
            raise InvalidModelError(f"{index.name} maps {str(weight)[:100]!r} to {str(shard)[:100]!r}, outside the folder")
        if (folder / shard).is_symlink() or not (folder / shard).is_file():
            raise InvalidModelError(f"{index.name} maps {str(weight)[:100]!r} to {shard!r}, which the archive lacks")


def _load_tokenizer(folder: Path):
    """The checkpoint's own tokenizer, or None when the zip has none (text datasets then say so)."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None
    settings = folder / "tokenizer_config.json"
    if settings.is_file():
        try:
            if "auto_map" in json.loads(settings.read_text()):
                raise InvalidModelError("the tokenizer needs custom code (auto_map in tokenizer_config.json); "
                                        "remote code is never run")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidModelError(f"tokenizer_config.json is not valid JSON: {e}") from None
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception as e:
        raise InvalidModelError(f"cannot load the tokenizer in the archive: {type(e).__name__}: {e}") from None
