"""``Faults``: the one entry point scenarios use, the same for every flavour.

Each fault is a context manager that applies on entry and always reverts on exit, even
when the body raises (``with``, or ``async with`` in a coroutine: then applying and
reverting run in a worker thread, so the scenario's own traffic keeps flowing while a
revert waits, e.g. for a killed replica's restart), and appends a :class:`FaultRecord`
(parameters, seed, times, whether it reverted) to :attr:`Faults.records` and, as a
JSON line, to ``log_path``. A revert that fails while the body already failed is added
as a note to the body's exception (never hiding it); a revert that fails after a clean
body raises :class:`FaultRevertError`.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from harness.faults import kubernetes, local
from harness.faults.base import (
    FaultNotSupported,
    FaultRecord,
    FaultRevertError,
    lookup,
)
from harness.target import Target


class Faults:
    """Faults against one target, every random choice drawn from ``random.Random(seed)``."""

    def __init__(
        self,
        flavour: str,
        env: Any,
        *,
        seed: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.flavour = flavour
        self.env = env
        self.seed = secrets.randbits(32) if seed is None else seed
        self.rng = random.Random(self.seed)  # noqa: S311 - reproducible choices, not secrets
        self.log_path = log_path
        self.records: list[FaultRecord] = []

    @classmethod
    def for_target(
        cls,
        target: Target,
        *,
        seed: int | None = None,
        log_path: Path | None = None,
        timeout: float = 90.0,
        http: httpx.Client | None = None,
    ) -> Faults:
        """The local flavour for a local stack, Kubernetes when ``target.kube_context`` is
        set (namespace ``HARNESS_KUBE_NAMESPACE``, default ``default``)."""
        env: Any
        if target.local is not None:
            flavour, env = "local", local.local_env(target.local, http=http, timeout=timeout)
        elif target.kube_context:
            namespace = os.environ.get("HARNESS_KUBE_NAMESPACE", "default")
            flavour = "kubernetes"
            env = kubernetes.KubeEnv(target.kube_context, namespace, timeout=timeout)
        else:
            raise FaultNotSupported(
                f"target {target.name} is neither a local stack nor a Kubernetes context: "
                "set HARNESS_KUBE_CONTEXT to inject faults into a deployed system"
            )
        return cls(flavour, env, seed=seed, log_path=log_path)

    # -- the generic way: any registered kind by name ------------------------------------
    def inject(self, kind: str, **params: Any) -> Fault:
        """Apply fault ``kind`` with ``params`` for the duration of the ``with`` (or
        ``async with``) block."""
        return Fault(self._inject(kind, **params))

    @contextmanager
    def _inject(self, kind: str, **params: Any) -> Iterator[FaultRecord]:
        fault = lookup(self.flavour, kind)(**params)
        record = FaultRecord(
            kind=kind,
            target=fault.target(),
            params=fault.params(),
            seed=self.seed,
            flavour=self.flavour,
            started_at=time.time(),
        )
        self.records.append(record)
        failure: BaseException | None = None
        try:
            fault.apply(self.env, self.rng)
            record.target, record.params = fault.target(), fault.params()
            yield record
        except BaseException as exc:
            failure = exc
            record.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            record.target, record.params = fault.target(), fault.params()
            try:
                fault.revert(self.env)
                record.reverted = True
            except Exception as exc:
                note = f"reverting {kind} on {record.target} failed: {type(exc).__name__}: {exc}"
                record.error = f"{record.error}; {note}" if record.error else note
                if failure is None:
                    raise FaultRevertError(note) from exc
                failure.add_note(note)
            finally:
                record.ended_at = time.time()
                self._log(record)

    def _log(self, record: FaultRecord) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as out:
                out.write(record.to_json() + "\n")

    # -- the named faults ----------------------------------------------------------------
    def kill_replica(self, service: str, replica: int | None = None) -> Fault:
        """SIGKILL one replica (``None``: the seeded RNG picks; ``orders-2`` is replica 2);
        on exit, wait until the supervisor restarted it and it is ready."""
        return self.inject("kill_replica", service=service, replica=replica)

    def pause_replica(self, service: str, replica: int | None = None) -> Fault:
        """SIGSTOP one replica; SIGCONT on exit (always), then wait until it is ready."""
        return self.inject("pause_replica", service=service, replica=replica)

    def restart_replica(self, service: str, replica: int | None = None) -> FaultRecord:
        """Restart one replica gracefully (SIGTERM) and wait until it is ready: a plain call."""
        with self.inject("restart_replica", service=service, replica=replica) as record:
            pass
        return record

    def edge_delay(self, service: str, *, delay_ms: int, percent: float = 100) -> Fault:
        """Delay ``percent`` % of the mesh calls into ``service`` by ``delay_ms``."""
        return self.inject("edge_delay", service=service, delay_ms=delay_ms, percent=percent)

    def edge_abort(self, service: str, *, status: int = 503, percent: float = 100) -> Fault:
        """Answer ``percent`` % of the mesh calls into ``service`` with ``status``."""
        return self.inject("edge_abort", service=service, status=status, percent=percent)

    def tcp_toxic(
        self,
        proxy: str,
        type: str,
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
        **attributes: Any,
    ) -> Fault:
        """A Toxiproxy toxic on ``proxy`` (``kafka``, ``postgres``): ``latency`` (latency,
        jitter ms), ``timeout`` (timeout ms, 0 = forever), ``bandwidth`` (rate KB/s),
        ``reset_peer``, ``slow_close``, ``slicer``, ``limit_data``."""
        return self.inject(
            "tcp_toxic",
            proxy=proxy,
            type=type,
            stream=stream,
            toxicity=toxicity,
            attributes=attributes,
        )

    def stop_component(self, component: str) -> Fault:
        """Stop ``component`` (e.g. ``kafka``) and keep it down; start it on exit and wait
        until it is ready. What depends on it keeps running."""
        return self.inject("stop_component", component=component)

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if close is not None:
            close()


class Fault(AbstractContextManager[FaultRecord], AbstractAsyncContextManager[FaultRecord]):
    """What each named fault returns: use it in a ``with`` block, or in an ``async with``
    block inside a coroutine. A synchronous ``with`` there would stop the event loop while
    the fault applies and reverts (seconds, for a restart), and with it the very traffic
    the scenario watches; ``async with`` runs them in a worker thread instead."""

    def __init__(self, context: AbstractContextManager[FaultRecord]) -> None:
        self._context = context

    def __enter__(self) -> FaultRecord:
        return self._context.__enter__()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return self._context.__exit__(kind, value, traceback)

    async def __aenter__(self) -> FaultRecord:
        return await asyncio.to_thread(self._context.__enter__)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await asyncio.to_thread(self._context.__exit__, kind, value, traceback)
