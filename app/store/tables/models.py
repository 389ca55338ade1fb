from __future__ import annotations

from typing import Any

from sqlalchemy import JSON
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base
from .uploads import UploadColumns


class Model(UploadColumns, Base):
    __tablename__ = "models"

    # how to read formats whose bytes do not say everything (TorchScript shape, safetensors architecture)
    load_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
