"""Zipped Hugging Face checkpoints: config.json + *.safetensors, loaded offline, never with remote code."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..contract.errors import InvalidModelError
from .archive import extract_zip
from .spec import InputSpec, LoadedModel, ModelFormat

DEFAULT_SEQUENCE_LENGTH = 128


class HuggingFaceOutputs(nn.Module):
    """Calls the model with `input_ids` and returns its main tensor (logits, else the last hidden state)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids)
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
        model, config = _load_folder(extract_zip(path, Path(workdir)))
    seq = sequence_length or min(DEFAULT_SEQUENCE_LENGTH, getattr(config, "max_position_embeddings", 512) or 512)
    return LoadedModel(
        module=HuggingFaceOutputs(model.eval()),
        format=ModelFormat.HUGGINGFACE,
        input_spec=InputSpec(shape=(None, seq), dtype=torch.int64, high=getattr(config, "vocab_size", None)),
        size_bytes=path.stat().st_size,
        runtime="eager",
        path=path,
        info={"arch": type(model).__name__, "model_type": config.model_type},
    )


def _load_folder(folder: Path):
    import transformers

    configs = list(folder.rglob("config.json"))
    if len(configs) != 1:
        raise InvalidModelError(f"the archive must hold one config.json, found {len(configs)}")
    folder = configs[0].parent
    try:
        raw = json.loads(configs[0].read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidModelError(f"config.json is not valid JSON: {e}") from None
    if "auto_map" in raw:
        raise InvalidModelError("this checkpoint needs custom code (auto_map in config.json); remote code is never run")
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
    return model, config
