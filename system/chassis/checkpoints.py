"""SQLite's WAL checkpoints on a thread of their own, not inside a commit on the loop.

In WAL mode a commit appends its pages to the write-ahead log, and SQLite copies the log
back into the database file (a checkpoint) once the log passes ``wal_autocheckpoint``
pages (1,000 by default), inside the commit that crossed it. With
``synchronous=NORMAL`` that checkpoint is also the only place the files are synced: two
``fdatasync`` calls. The services commit on their event loop (``sqlite_inline``), so
that one commit held up everything the process does: at 150 orders/s the orders
service's loop made 162 ``fdatasync`` calls in 10 s (``strace -T``), up to 7 ms each and
~2% of its time, and on a loaded machine every request, saga step and relay cycle of
the service waited behind them.

:class:`Checkpointer` runs ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval`` seconds
in which the log was written to (its mtime moved), on a connection of its own, in a
thread of its own: :mod:`sqlite3` lets go of the GIL while SQLite copies and syncs, so
the loop goes on (8 syncs in 10 s were left on the loop, each the first commit into a
restarted log, which syncs the log's new header). PASSIVE never waits for a reader or
the writer; what it cannot copy yet is copied next time. The services' own connections
raise ``wal_autocheckpoint`` to :data:`FALLBACK_PAGES`, so a commit still checkpoints if
the thread falls far behind or does not run (a tool that opens the file without the
app).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("system.chassis.checkpoints")

FALLBACK_PAGES = 20_000
"""``wal_autocheckpoint`` of the services' connections while a :class:`Checkpointer`
runs: ~80 MiB of log, seconds of writes at full load."""


class Checkpointer:
    """Checkpoints the WAL of the SQLite file at ``path`` every ``interval`` seconds, if
    it was written to."""

    def __init__(self, path: str, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._path = path
        self._interval = interval
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-checkpoint")
        self._connection: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"wal-checkpoint {self._path}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)

    async def checkpoint(self) -> tuple[int, int]:
        """One passive checkpoint now: (frames in the log, of which copied to the file)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint)

    async def _run(self) -> None:
        checked: int | None = None  # the log's mtime at the last checkpoint
        while True:
            await asyncio.sleep(self._interval)
            try:
                changed = os.stat(f"{self._path}-wal").st_mtime_ns
            except OSError:  # no log (yet, or any more): nothing to copy
                continue
            if changed == checked:  # nothing written since: an idle service asks nothing
                continue
            try:
                await self.checkpoint()
            except sqlite3.Error as exc:  # busy, or the file went away: next time
                log.warning("WAL checkpoint of %s failed: %s", self._path, exc)
            else:
                checked = changed

    def _checkpoint(self) -> tuple[int, int]:
        if self._connection is None:
            self._connection = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False
            )
            self._connection.execute("PRAGMA busy_timeout=0")
        _busy, frames, copied = self._connection.execute(
            "PRAGMA wal_checkpoint(PASSIVE)"
        ).fetchone()
        return frames, copied

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
