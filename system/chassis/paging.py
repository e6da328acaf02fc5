"""Paging parameters every list endpoint shares, bounded so a huge offset is a 400 and
never reaches the database (SQLite's integers stop at 2**63 - 1: beyond, the driver
raises and the request failed with a 500)."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

MAX_OFFSET = 1_000_000_000

Offset = Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET, description="items to skip")]

__all__ = ["MAX_OFFSET", "Offset"]
