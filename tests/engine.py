"""The engine as the tests read it: `run_recipe`'s typed report as its JSON (report.json's shape), so the
assertions read the public format a user's script gets from the engine CLI or the API."""

from __future__ import annotations

from workers.compression import run_recipe as run_typed


def run_recipe(*args, **kwargs) -> dict:
    return run_typed(*args, **kwargs).model_dump(mode="json")
