"""A Hugging Face upload's own tokenizer, as its loader found it: text datasets are tokenized with it."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_LONGEST = 512


@dataclass(frozen=True)
class Tokenizer:
    """A Hugging Face upload's tokenizer with what the model says about its texts."""

    tokenizer: object
    longest: int = DEFAULT_LONGEST  # the model's position limit
    label_names: list[str] | None = None  # the model's own class names (config id2label), when it has them
