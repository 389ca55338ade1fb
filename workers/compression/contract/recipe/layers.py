"""Checks a step's layer names against the layers inspection found in the uploaded model (torch-free)."""

from __future__ import annotations

from fnmatch import fnmatchcase


def unmatched_exclude(patterns: list[str], names: list[str]) -> str | None:
    """Why an `exclude` list cannot be right: a pattern that matches none of the model's layers."""
    for pattern in patterns:
        if not any(fnmatchcase(n, pattern) for n in names):
            return f"exclude pattern {pattern!r} matches no layer; the Linear/Conv layers are: {', '.join(names[:40])}"
    return None
