"""Text datasets: `.jsonl` (one object a line) or `.csv` (a header row) with `text`, optionally `text_pair`
and `label`, tokenized with the tokenizer inside the uploaded Hugging Face zip.

Every sample is padded to one length (`max_length` padding) so a batch is one tensor: the longest text's
length, capped by the model's position limit (or its fixed input length); longer texts are truncated and
counted. How it was done is recorded in the dataset's `tokenization`, which the results carry.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..contract.errors import InvalidDatasetError
from ..contract.inspection import DatasetInfo, Tokenization
from ..contract.vocabulary import JobErrorCode
from ..formats.spec import InputSpec
from ..formats.tokenizer import Tokenizer
from .dataset import Dataset

MAX_ROWS = 200_000
MAX_TEXT_CHARS = 100_000  # one text field; a tokenizer would truncate anyway, this bounds the work


@dataclass(frozen=True)
class TextRows:
    texts: list[str]
    pairs: list[str] | None
    labels: list[int | str] | None

    def describe(self) -> DatasetInfo:
        """What inspection says of the file before any model's tokenizer sees it."""
        classes = _classes(self.labels) if self.labels is not None else None
        return DatasetInfo(
            samples=len(self.texts),
            text=True,
            text_chars=sum(map(len, self.texts)) + sum(map(len, self.pairs or [])),
            columns=["text", *(["text_pair"] if self.pairs else []), *(["label"] if self.labels else [])],
            labels=self.labels is not None,
            num_classes=len(classes) if classes else (max(self.labels) + 1 if self.labels else None),
            classes=classes,
        )


def read_rows(path: Path, kind: str) -> TextRows:
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidDatasetError(f"a text dataset must be UTF-8: {e}") from None
    records = _jsonl(raw) if kind == "jsonl" else _csv(raw)
    if not records:
        raise InvalidDatasetError("the text dataset has no rows")
    if len(records) > MAX_ROWS:
        raise InvalidDatasetError(f"the text dataset has {len(records)} rows; at most {MAX_ROWS} are accepted")
    texts = [_text(r, "text", n) for n, r in enumerate(records, 1)]
    has_pair = any("text_pair" in r for r in records)
    pairs = [_text(r, "text_pair", n) for n, r in enumerate(records, 1)] if has_pair else None
    has_label = any("label" in r for r in records)
    labels = [_label(r, n) for n, r in enumerate(records, 1)] if has_label else None
    if labels is not None and len({type(v) for v in labels}) > 1:
        raise InvalidDatasetError("labels must be all integers (class indices) or all class names, not a mix")
    return TextRows(texts, pairs, labels)


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
            raise InvalidDatasetError("the tokenizer has neither a padding nor an end-of-text token to pad with",
                                      code=JobErrorCode.NO_TOKENIZER)
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
    classes = label_names if label_names and set(labels) <= set(label_names) else _classes(labels)
    return torch.tensor([classes.index(v) for v in labels], dtype=torch.int64), classes


def _classes(labels) -> list[str] | None:
    return sorted(set(labels)) if labels and isinstance(labels[0], str) else None


def _jsonl(raw: str) -> list[dict]:
    records = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise InvalidDatasetError(f"line {n} of the .jsonl is not JSON: {str(e)[:200]}") from None
        if not isinstance(record, dict):
            raise InvalidDatasetError(f'line {n} of the .jsonl is not an object like {{"text": "...", "label": 0}}')
        records.append(record)
    return records


def _csv(raw: str) -> list[dict]:
    try:
        reader = csv.DictReader(io.StringIO(raw))
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise InvalidDatasetError(f"the .csv header must name a 'text' column (found {reader.fieldnames})")
        records = [{k: v for k, v in row.items() if k in ("text", "text_pair", "label") and v != ""} for row in reader]
    except csv.Error as e:
        raise InvalidDatasetError(f"the .csv cannot be read: {e}") from None
    for r in records:  # csv has no types: a label of digits is a class index
        if isinstance(r.get("label"), str) and r["label"].strip().lstrip("-").isdigit():
            r["label"] = int(r["label"])
    return records


def _text(record: dict, key: str, n: int) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidDatasetError(f"row {n} has no {key!r} string" + (" (every row needs one)" if key == "text" else ""))
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidDatasetError(f"row {n}'s {key!r} has {len(value)} characters; at most {MAX_TEXT_CHARS}")
    return value


def _label(record: dict, n: int) -> int | str:
    value = record.get("label")
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise InvalidDatasetError(f"row {n} has no 'label' (an integer class index or a class name); label every row")
    return value
