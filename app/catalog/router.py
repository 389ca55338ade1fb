from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter

from workers.compression.contract.recipe import catalogue

router = APIRouter(prefix="/v1/methods", tags=["methods"])


@lru_cache
def _catalogue() -> dict:
    return {"methods": catalogue()}


@router.get("")
def list_methods() -> dict:
    """Every recipe step: its parameters as JSON Schema and the model formats each variant accepts."""
    return _catalogue()
