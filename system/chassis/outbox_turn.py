"""Turns at relaying one outbox, for relays of several processes sharing its database.

Replicas of a service share its database, so each replica's relay reads the same
unpublished rows. Without turns, two relays that read before either marked both sent
the same rows: at 150 orders/s on the local stack, the two products replicas sent
437 events a second for 300 staged (the inbox of every consumer then dropped the copies).

A relay given a :class:`Turns` takes the turn -- one row, ``outbox_turn`` -- in the
transaction that reads its batch, and gives it back in the transaction that marks the
batch published. While one relay holds it, the others read nothing: their rows go out
in that relay's cycle, if committed before its read, or in their own next cycle. So an
event is sent once, and the rows still go out in outbox order, one cycle at a time.

A turn lasts ``turn_s`` at most: the turn of a relay that died in its cycle (a killed
replica) is taken over when it runs out, and its batch is sent again -- the duplicate
the at-least-once outbox allows anyway. A cycle that waits longer than that for Kafka
loses its turn the same way. A relay alone on its database needs no turns (the default:
``outbox_shared`` in a service's settings; the local runtime sets it for a service run
with more than one replica).
"""

from __future__ import annotations

import time
import uuid

from advanced_alchemy.base import DefaultBase
from sqlalchemy import Connection, String, bindparam, insert, or_, select, update
from sqlalchemy.orm import Mapped, mapped_column

from system.chassis.db import table_of
from system.chassis.prepared import Prepared

_NAME = "relay"


class OutboxTurn(DefaultBase):
    """Which relay's turn it is (``holder``), until when (seconds since the epoch)."""

    __tablename__ = "outbox_turn"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64))
    until: Mapped[float]


_TURN = table_of(OutboxTurn)
_TAKE = Prepared(
    update(_TURN)
    .where(_TURN.c.name == _NAME)
    .where(
        or_(
            _TURN.c.holder.is_(None),
            _TURN.c.holder == bindparam("me"),
            _TURN.c.until < bindparam("now"),
        )
    )
    .values(holder=bindparam("me"), until=bindparam("deadline"))
)
_GIVE_BACK = Prepared(
    update(_TURN)
    .where(_TURN.c.name == _NAME)
    .where(_TURN.c.holder == bindparam("me"))
    .values(holder=None)
)
_EXISTS = Prepared(select(_TURN.c.name).where(_TURN.c.name == _NAME))
_CREATE = Prepared(insert(_TURN))


class Turns:
    """One relay's side of the turns (a relay per object: ``me`` tells them apart)."""

    def __init__(self, turn_s: float = 2.0) -> None:
        if turn_s <= 0:
            raise ValueError("turn_s must be positive")
        self.me = uuid.uuid4().hex
        self._turn_s = turn_s
        self.row_made = False

    def make_row(self, session: Connection) -> None:
        """Create the turn's row if no relay has yet. Run it in a transaction of its own:
        a relay creating it at the same moment makes this one fail with an
        ``IntegrityError``, and the row is there all the same."""
        if not _EXISTS(session).first():
            _CREATE(session, {"name": _NAME, "holder": None, "until": 0.0})

    def take(self, session: Connection) -> bool:
        """Take the turn, for ``turn_s`` at most; false while another relay holds it."""
        now = time.time()
        taken = _TAKE(session, {"me": self.me, "now": now, "deadline": now + self._turn_s})
        return taken.rowcount == 1

    def give_back(self, session: Connection) -> None:
        _GIVE_BACK(session, {"me": self.me})
