"""Cursor pagination over time-sortable ids: newest first; the cursor is the last id of a page."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import Session

T = TypeVar("T")
ID_PATTERN = r"^[a-z]+_[0-9a-f]+$"  # what store.db.new_id makes: a cursor is an id


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class PageParams(BaseModel):
    limit: int = 50
    cursor: str | None = None


def page_params(
    limit: Annotated[int, Query(ge=1, le=500, description="items per page")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=100, pattern=ID_PATTERN, description="next_cursor of the previous page")
    ] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


def paginate(session: Session, query: Select, id_column: Any, params: PageParams) -> tuple[list, str | None]:
    if params.cursor:
        query = query.where(id_column < params.cursor)
    rows = list(session.scalars(query.order_by(id_column.desc()).limit(params.limit + 1)))
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    return rows, (rows[-1].id if more and rows else None)
