"""Text datasets: `.jsonl` (one object a line) or `.csv` (a header row) with `text`, optionally `text_pair`
and `label`, tokenized with the tokenizer inside the uploaded Hugging Face zip.

Every sample is padded to one length (`max_length` padding) so a batch is one tensor: the longest text's
length, capped by the model's position limit (or its fixed input length); longer texts are truncated and
counted. How it was done is recorded in the dataset's `tokenization`, which the results carry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..contract.errors import InvalidDatasetError
from ..contract.inspection import Tokenization
from ..contract.vocabulary import JobErrorCode
from ..formats.spec import InputSpec
from ..formats.tokenizer import Tokenizer
from .dataset import Dataset
from .rows import classes_of, read_rows


def tokenized(path: Path, kind: str, spec: InputSpec | None, text: Tokenizer | None):
    """The dataset as the model's named inputs (input_ids, attention_mask, ...), packed along dimension 1."""
    if text is None:
        raise InvalidDatasetError(
            "a text dataset is tokenized with the tokenizer inside the uploaded Hugging Face zip, and this model has "
            "none: save the tokenizer into the model's folder (tokenizer.save_pretrained) and zip it again, or "
            "upload token ids as .npz with arrays input_ids and attention_mask",
            code=JobErrorCode.NO_TOKENIZER,
        )
    rows, tokenizer = read_rows(path, kind), text.tokenizer
    padded_with = "pad"
    if tokenizer.pad_token is None:  # causal LM tokenizers often have none; the mask hides the padding anyway
        if tokenizer.eos_token is None:
            raise InvalidDatasetError(
                "the tokenizer has neither a padding nor an end-of-text token to pad with",
                code=JobErrorCode.NO_TOKENIZER,
            )
        tokenizer.pad_token, padded_with = tokenizer.eos_token, "eos"
    fixed = spec.shape[-1] if spec is not None and isinstance(spec.shape[-1], int) else None
    args = (rows.texts, rows.pairs) if rows.pairs else (rows.texts,)
    lengths = [len(ids) for ids in tokenizer(*args, truncation=False)["input_ids"]]
    length = fixed or min(max(lengths), text.longest)
    encoded = tokenizer(*args, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    names = tuple(n for n in tokenizer.model_input_names if n in encoded)
    x = torch.from_numpy(np.stack([encoded[n].astype(np.int64) for n in names], axis=1))
    if len(names) == 1:
        x = x[:, 0]
    y, classes = _label_tensor(rows.labels, text.label_names)
    tokenization = Tokenization(
        padding="max_length",
        truncation=True,
        max_length=length,
        truncated=sum(n > length for n in lengths),
        longest=max(lengths),
        inputs=list(names),
        pad_token=padded_with,
    )
    return Dataset(x, y, classes, names if len(names) > 1 else None, tokenization)


def _label_tensor(labels, label_names):
    if labels is None:
        return None, None
    if isinstance(labels[0], int):
        if min(labels) < 0:
            raise InvalidDatasetError(f"labels must be >= 0, found {min(labels)}")
        return torch.tensor(labels, dtype=torch.int64), label_names
    classes = label_names if label_names and set(labels) <= set(label_names) else classes_of(labels)
    return torch.tensor([classes.index(v) for v in labels], dtype=torch.int64), classes
