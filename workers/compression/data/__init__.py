"""Datasets: `.npz` / `.safetensors` with `x` (and optional integer `y`) or several arrays named after the
model's inputs, a zipped image folder, or `.jsonl` / `.csv` text tokenized by the model's own tokenizer.

Files are read and checked without PyTorch (arrays.py, rows.py; an upload's inspection, inspect.py, needs
nothing more); loading.py makes the tensors a job uses. Exports resolve lazily, so importing the torch-free
parts does not import PyTorch."""

from .._lazy import lazy_exports

_EXPORTS = {
    "ACCEPTED": "arrays",
    "MAX_ARRAY_BYTES": "arrays",
    "ArrayData": "arrays",
    "Dataset": "dataset",
    "check_fits": "loading",
    "load_dataset": "loading",
    "read_rows": "rows",
    "tokenized": "text",
    "inspect_dataset": "inspect",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
