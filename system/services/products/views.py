"""``GET /{id}``'s read path: the product view, cached in the replica, never stale.

On SQLite the view is read inline on the event loop through one plain ``sqlite3``
read-only connection (a primary-key SELECT in WAL mode takes microseconds; the ORM session
and aiosqlite's thread hop cost ~0.5 ms a read), and kept in a dict that is valid while
``PRAGMA data_version`` is unchanged. That number changes whenever *any other* connection
commits to the file — this replica's writer, the other products replica, a consumer — and
this connection never writes, so every commit empties the cache before the next read: a
cached view is exactly what a fresh SELECT would return (no staleness bound to document).

WAL readers do not wait for the writer; if SQLite still answers busy (a WAL recovery, for
instance) the read falls back to the reader engine, so the loop never blocks on a lock.
On PostgreSQL there is no cache: the read is one Core SELECT on the reader engine.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from system.services.products.models import Product

COLUMNS = ("id", "sku", "name", "description", "category", "price_cents")
STOCK = ("available", "reserved", "sold", "received")
_COLUMNS = [getattr(Product, name) for name in COLUMNS + STOCK]
_SELECT = str(
    select(*_COLUMNS).where(Product.id == bindparam("id")).compile(dialect=sqlite.dialect())
)
MAX_ENTRIES = 10_000
"""Beyond this many cached products the cache starts again empty (a bound on memory)."""

Row = tuple[Any, ...]
T = TypeVar("T")


class ProductReads:
    """One product by id: what a renderer makes of its row (``COLUMNS + STOCK``), or ``None``."""

    def __init__(self, database_url: str, reader: AsyncEngine) -> None:
        url = make_url(database_url)
        self._file = url.database if url.get_backend_name() == "sqlite" else None
        self._reader = reader
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None
        self._rows: dict[uuid.UUID, Row] = {}
        self._answers: dict[uuid.UUID, Any] = {}

    async def answer(self, product_id: uuid.UUID, render: Callable[[Row], T]) -> T | None:
        """What ``render`` makes of the product's row, made once per cached row and
        dropped with it (encoding the view and building the response was a fifth of a
        cached read); made afresh on every read through the engine."""
        if self._file is not None:
            try:
                row = self._inline(product_id)
            except sqlite3.OperationalError:
                self._version = None  # busy or odd: read through the engine, cache nothing
            else:
                if row is None:
                    return None
                made: T | None = self._answers.get(product_id)
                if made is None:
                    made = self._answers[product_id] = render(row)
                return made
        found = await self._through_engine(product_id)
        return None if found is None else render(found)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _inline(self, product_id: uuid.UUID) -> Row | None:
        conn = self._connection()
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        if version != self._version or len(self._rows) >= MAX_ENTRIES:
            self._rows.clear()
            self._answers.clear()
            self._version = version
        cached = self._rows.get(product_id)
        if cached is not None:
            return cached
        found = conn.execute(_SELECT, (product_id.bytes,)).fetchone()  # BINARY(16) ids
        if found is None:
            return None
        row = (product_id, *found[1:])
        self._rows[product_id] = row
        return row

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(f"file:{self._file}?mode=ro", uri=True, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA busy_timeout=0")  # never wait on the loop: fall back instead
            self._conn = conn
        return self._conn

    async def _through_engine(self, product_id: uuid.UUID) -> Row | None:
        async with self._reader.connect() as conn:
            found = (await conn.execute(select(*_COLUMNS).where(Product.id == product_id))).first()
        return tuple(found) if found is not None else None
