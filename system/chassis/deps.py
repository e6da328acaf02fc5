"""The dependencies the chassis injects into route handlers, declared explicitly
(Litestar 3 drops inferred dependencies)."""

from __future__ import annotations

from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from system.chassis.outbound import MeshClient

DbSession = NamedDependency[AsyncSession]
"""The request's transaction: committed after a 2xx/3xx response, else rolled back."""
ReadSession = NamedDependency[AsyncSession]
"""A read-only session (``db_read``) for handlers that never write: on SQLite it uses the
reader pool, so reads do not queue behind the single writer connection."""
Mesh = NamedDependency[MeshClient]
