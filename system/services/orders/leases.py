"""Saga leases: which orders replica drives an order's saga, and until when.

A lease is a row ``(order_id, owner, expires_at)``. The replica that places an order
takes it in the placing transaction (:meth:`SagaLeases.hold`); a replica that finds an
unfinished order takes it only if it is free, expired or already its own
(:meth:`SagaLeases.claim`). The owner renews it when half of it is gone and deletes it
with the order's final event, so two replicas never drive the same saga and a dead
replica's sagas are taken over ``lease_s`` after its last renewal.

Statements are built once (a statement built per call cost more than running it); a
lease is picked by the ``the_order`` and ``the_owner`` parameters. The operations in the
caller's transaction are synchronous: they run inside the one greenlet of that
transaction (``system.chassis.db.in_transaction``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from system.chassis.db import Executor, in_transaction, insert_if_absent_in, table_of
from system.chassis.prepared import Prepared
from system.services.orders.models import SagaLease

_LEASES = table_of(SagaLease)
_THIS = (_LEASES.c.order_id == bindparam("the_order"), _LEASES.c.owner == bindparam("the_owner"))
_TAKE = Prepared(insert(_LEASES))
_CLAIM = Prepared(
    update(_LEASES).where(_THIS[0], _THIS[1] | (_LEASES.c.expires_at < bindparam("now")))
)
_RENEW = Prepared(update(_LEASES).where(*_THIS))
_DROP = Prepared(delete(_LEASES).where(*_THIS))


@dataclass
class Lease:
    """Until when this replica owns a saga (as it last wrote it)."""

    expires_at: datetime


class SagaLeases:
    def __init__(
        self, owner: str, lease_s: float, session_maker: async_sessionmaker[AsyncSession]
    ) -> None:
        self.owner = owner
        self._length = timedelta(seconds=lease_s)
        self._maker = session_maker

    def expiring(self, lease: Lease) -> bool:
        """Less than half of the lease left: renew it before going on."""
        return lease.expires_at - datetime.now(UTC) < self._length / 2

    def hold(self, session: Executor, order_id: str) -> Lease:
        """Take the lease on a new order in the caller's transaction (the one placing it)."""
        lease = Lease(datetime.now(UTC) + self._length)
        _TAKE(session, {"order_id": order_id, "owner": self.owner, "expires_at": lease.expires_at})
        return lease

    async def claim(self, order_id: str) -> Lease | None:
        """Take the lease if it is free, expired or already ours: one conditional UPDATE
        (atomic on PostgreSQL, serialized by the single writer on SQLite), else an INSERT
        that a lease taken meanwhile makes a no-op. ``None``: another replica holds it."""
        return await in_transaction(self._maker, self._claim, order_id)

    def _claim(self, session: Executor, order_id: str) -> Lease | None:
        now = datetime.now(UTC)
        expires = now + self._length
        values = {"owner": self.owner, "expires_at": expires}
        taken = _CLAIM(session, {**self._mine(order_id), "now": now, **values})
        if not taken.rowcount:
            row = {"order_id": order_id, **values}
            if insert_if_absent_in(session, SagaLease, row) != 1:
                return None
        return Lease(expires)

    def renew(self, session: Executor, order_id: str, lease: Lease) -> None:
        """Extend ``lease`` in the caller's transaction."""
        expires = datetime.now(UTC) + self._length
        _RENEW(session, {**self._mine(order_id), "expires_at": expires})
        lease.expires_at = expires

    def drop(self, session: Executor, order_id: str) -> None:
        """Delete the lease in the caller's transaction (with the order's final event)."""
        _DROP(session, self._mine(order_id))

    async def release(self, order_id: str) -> None:
        """Delete the lease in a transaction of its own, if the database lets us."""
        with contextlib.suppress(Exception):
            await in_transaction(self._maker, self.drop, order_id)

    def _mine(self, order_id: str) -> dict[str, str]:
        return {"the_order": order_id, "the_owner": self.owner}
