"""The rows of a text dataset (`.jsonl` or `.csv` with `text`, optionally `text_pair` and `label`), read and
checked without a tokenizer or PyTorch: what an upload's inspection reports (data/inspect.py), and what
data/text.py tokenizes for a job."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..contract.errors import InvalidDatasetError
from ..contract.inspection import DatasetInfo

MAX_ROWS = 200_000
MAX_TEXT_CHARS = 100_000  # one text field; a tokenizer would truncate anyway, this bounds the work


@dataclass(frozen=True)
class TextRows:
    texts: list[str]
    pairs: list[str] | None
    labels: list[int | str] | None

    def describe(self) -> DatasetInfo:
        """What inspection says of the file before any model's tokenizer sees it."""
        classes = classes_of(self.labels) if self.labels is not None else None
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


def classes_of(labels) -> list[str] | None:
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
        raise InvalidDatasetError(
            f"row {n} has no {key!r} string" + (" (every row needs one)" if key == "text" else "")
        )
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidDatasetError(f"row {n}'s {key!r} has {len(value)} characters; at most {MAX_TEXT_CHARS}")
    return value


def _label(record: dict, n: int) -> int | str:
    value = record.get("label")
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise InvalidDatasetError(f"row {n} has no 'label' (an integer class index or a class name); label every row")
    return value
