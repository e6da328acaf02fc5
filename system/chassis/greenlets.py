"""``greenlet_spawn`` on greenlets kept for reuse.

SQLAlchemy's asyncio layer runs synchronous database code in a greenlet:
``greenlet_spawn(fn)`` starts ``fn`` in a new greenlet, and whenever ``fn`` needs to
wait (``await_only``) the greenlet switches back to the event loop's, which awaits and
switches in again. A new greenlet per call costs more than the switches: on its first
run it maps a fresh chunk of the interpreter's frame stack, unmapped again when it
ends (``mmap``/``munmap`` per transaction in ``strace``). Measured here: 12.6 µs of CPU
for ``greenlet_spawn`` of a function that does nothing, 2.1 µs for :func:`spawn`; a
one-statement transaction 95 → 73 µs, the deeper frames of real work mapping more.

:func:`spawn` keeps finished greenlets of the calling thread in a free list (at most
:data:`KEPT`) and runs the next function on one of them. Each keeps SQLAlchemy's
marker (``__sqlalchemy_greenlet_provider__``) so ``await_only`` works in it exactly as in
a greenlet of ``greenlet_spawn``, and runs ``fn`` in the caller's ``contextvars``
context (the task's: the current span, ``sql_spans``' operation). An exception thrown in
while ``fn`` waits (the awaiting task cancelled) is thrown into ``fn``, as
``greenlet_spawn`` does, so its ``with`` blocks roll back; the greenlet is reused after.
Attributes set on the greenlet itself outlive the call: ``sqlite_inline``'s in-place mark
does, which is why only ``in_transaction`` (which sets it on every run) uses :func:`spawn`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet

KEPT = 32
"""Idle greenlets kept per thread (one per transaction waiting at the same moment)."""
P = ParamSpec("P")
T = TypeVar("T")
_FINISHED = object()
"""What a worker switches back with when ``fn`` returned or raised (anything else is an
awaitable from ``await_only``)."""


class _Worker(greenlet):
    __sqlalchemy_greenlet_provider__ = True

    def __init__(self) -> None:
        super().__init__(self._serve, getcurrent())
        self.returned: Any = None
        self.raised: BaseException | None = None

    def _serve(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        while True:
            try:
                self.returned = fn(*args, **kwargs)
            except GreenletExit:
                raise  # the greenlet itself is being discarded
            except BaseException as error:  # handed to the awaiting task, which raises it
                self.raised = error
            fn = args = kwargs = None  # type: ignore[assignment]  # hold nothing while idle
            fn, args, kwargs = self.parent.switch(_FINISHED)  # type: ignore[union-attr]


class _Idle(threading.local):
    """This thread's finished greenlets (a worker's parent is a greenlet of its thread)."""

    def __init__(self) -> None:
        self.workers: list[_Worker] = []


_idle = _Idle()


async def spawn(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``await spawn(fn, ...)``: ``sqlalchemy.util.greenlet_spawn(fn, ...)`` on a reused
    greenlet."""
    idle = _idle.workers
    driver = getcurrent()
    worker = idle.pop() if idle else _Worker()
    if worker.parent is not driver:  # started from another greenlet of this thread
        worker.parent = driver
    worker.gr_context = driver.gr_context
    step = worker.switch(fn, args, kwargs)
    while step is not _FINISHED:
        try:
            value = await step
        except BaseException:
            step = worker.throw(*sys.exc_info())
        else:
            step = worker.switch(value)
    result, error = worker.returned, worker.raised
    worker.returned = worker.raised = worker.gr_context = None
    if len(idle) < KEPT:
        idle.append(worker)
    if error is not None:
        try:
            raise error
        finally:
            del error  # no cycle through this frame's traceback
    return result  # type: ignore[no-any-return]
