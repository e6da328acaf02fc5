"""The order saga, orchestrated: reserve stock → authorize payment → confirm; any failure
compensates (release, void) and cancels with a reason.

Progress is the order's own event stream: every step appends an event, so a replica that
restarts loads the stream and carries on from the last step. A lease (``saga_lease``)
makes sure two replicas never drive the same order; a sweep picks up sagas whose lease
expired (their replica died). A forward step that keeps failing for ``step_timeout_s``
is given up and compensated, so no order stays pending; compensation retries until it
succeeds (it only undoes idempotent effects). Each step runs in a span whose parent is
the request that placed the order, so one saga is one trace.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import bindparam, select

from system.chassis.credentials import ServiceToken
from system.chassis.db import Executor, Transactions, in_transaction
from system.chassis.outbound import MeshClient, UpstreamError
from system.chassis.trace_context import extract, follows_parent_sampling, span_or_parent
from system.services.orders import store
from system.services.orders.aggregate import (
    TERMINAL,
    Action,
    DomainEvent,
    OrderState,
    Status,
    apply,
    next_action,
)
from system.services.orders.leases import Lease, SagaLeases
from system.services.orders.models import OrderView, SagaLease
from system.services.orders.settings import OrdersSettings

log = logging.getLogger("orders.saga")
FORWARD = (Action.RESERVE, Action.AUTHORIZE, Action.CONFIRM)
LOCAL = frozenset({Action.CONFIRM, Action.CANCEL})
"""Steps that call nobody: their events are committed with the step before them."""


def _ahead(state: OrderState, pending: list[DomainEvent]) -> OrderState:
    for item in pending:
        state = apply(state, item)
    return state


@dataclass(frozen=True)
class Done:
    events: list[DomainEvent]


@dataclass(frozen=True)
class Failed:
    """A business refusal: compensate now."""

    reason: str


@dataclass(frozen=True)
class Retry:
    """A transient failure: try the step again (until its deadline, if it has one)."""

    detail: str


Outcome = Done | Failed | Retry


class SagaDriver:
    def __init__(
        self,
        settings: OrdersSettings,
        transactions: Transactions,
        mesh: MeshClient,
        token: ServiceToken,
        *,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._settings = settings
        self._maker = transactions.writer
        self._reader = transactions.reader
        """Where the sweep looks for orphans: on SQLite the reader pool, so the sweep never
        holds the one writer connection."""
        self._mesh = mesh
        self._token = token
        self.leases = SagaLeases(
            settings.replica or f"{settings.name}-{settings.port}", settings.lease_s, self._maker
        )
        self._tracer = trace.get_tracer("orders.saga", tracer_provider=tracer_provider)
        self._follows = follows_parent_sampling(tracer_provider)
        self._driving: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.max_parallel_sagas)
        self._sweeper: asyncio.Task[None] | None = None

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="saga-sweeper")

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._driving.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._driving.clear()

    def kick(
        self, order_id: str, placed: OrderState | None = None, lease: Lease | None = None
    ) -> None:
        """Drive ``order_id`` now (if this replica is not driving it already). ``placed``
        and ``lease``: the state the placing transaction committed and the lease it held,
        which save the claim and the load."""
        if order_id not in self._driving:
            task = asyncio.create_task(self.drive(order_id, placed, lease), name=f"saga-{order_id}")
            self._driving[order_id] = task
            task.add_done_callback(lambda _t: self._driving.pop(order_id, None))

    async def idle(self) -> None:
        """Wait until no saga is being driven by this replica (for tests)."""
        while self._driving:
            await asyncio.gather(*list(self._driving.values()), return_exceptions=True)

    # -- driving -------------------------------------------------------------------------
    async def drive(
        self, order_id: str, placed: OrderState | None = None, lease: Lease | None = None
    ) -> None:
        async with self._slots:
            state = placed
            if lease is None or self.leases.expiring(lease):  # never held, or held too long ago
                state, lease = None, await self.leases.claim(order_id)
                if lease is None:
                    return
            released = False
            try:
                if state is None:
                    async with self._maker() as session:
                        state = await store.load(session, order_id)
                released = await self._run(state, lease)
            except store.UnknownOrder:
                log.info("order %s is not committed yet; the sweep will pick it up", order_id)
            except store.ConcurrencyConflict:
                log.warning("order %s moved under this driver; the sweep will reload it", order_id)
            finally:
                if not released:
                    await self.leases.release(order_id)

    async def _run(self, state: OrderState, lease: Lease) -> bool:
        """Drive from ``state``; afterwards the state is what this driver appended (the
        lease keeps other writers out, and a stale state fails the append anyway).

        A step's events are committed in its span, together with those of the local steps
        that follow it (confirm, cancel: no call, nothing that can fail), so a confirmed
        order takes three transactions: placed, reserved, authorized + confirmed.
        True when the final append also released the lease (a transaction fewer)."""
        backoff = 0.1
        pending: list[DomainEvent] = []
        ahead = state  # ``state`` with ``pending`` applied
        appended = False
        while True:
            action = next_action(ahead)
            if action is None:
                return appended and state.status in TERMINAL
            with span_or_parent(
                self._tracer,
                self._follows,
                f"saga {action.value}",
                parent=extract(state.trace),
                attributes={"order.id": state.order_id, "saga.step": action.value},
            ):
                outcome = await self._execute(action, ahead)
                if isinstance(outcome, Retry) and action in FORWARD and self._overdue(ahead):
                    outcome = Failed(f"{action.value}_timeout")
                if not isinstance(outcome, Retry):
                    events = (
                        outcome.events
                        if isinstance(outcome, Done)
                        else [
                            store.event(
                                "compensation_started", reason=outcome.reason, step=action.value
                            )
                        ]
                    )
                    pending += events
                    ahead = _ahead(ahead, events)
                    if next_action(ahead) not in LOCAL:
                        state = ahead = await self._commit(state, pending, lease)
                        pending, appended = [], True
            if isinstance(outcome, Retry):
                log.warning(
                    "order %s: %s failed (%s); retrying", state.order_id, action, outcome.detail
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                if self.leases.expiring(lease):  # a step retried for long: keep the saga
                    await in_transaction(self._maker, self.leases.renew, state.order_id, lease)
            else:
                backoff = 0.1

    def _overdue(self, state: OrderState) -> bool:
        started = state.updated_at or datetime.now(UTC)
        return datetime.now(UTC) - started > timedelta(seconds=self._settings.step_timeout_s)

    async def _commit(
        self, state: OrderState, events: list[DomainEvent], lease: Lease
    ) -> OrderState:
        """Append; release the lease with the order's final event, or renew it when half
        of it is gone."""
        return await in_transaction(self._maker, self._append, state, events, lease)

    def _append(
        self, session: Executor, state: OrderState, events: list[DomainEvent], lease: Lease
    ) -> OrderState:
        new_state = store.append_in(session, state, events)
        if new_state.status in TERMINAL:
            self.leases.drop(session, state.order_id)
        elif self.leases.expiring(lease):
            self.leases.renew(session, state.order_id, lease)
        return new_state

    async def _execute(self, action: Action, state: OrderState) -> Outcome:
        try:
            return await _STEPS[action](self, state)
        except UpstreamError as exc:
            return Retry(f"{exc.__class__.__name__}: {exc}")

    async def _call(
        self, upstream: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        response = await self._mesh.request(
            upstream, method, path, json=body, headers=await self._token.headers(), idempotent=True
        )
        if response.status_code == 401:
            self._token.invalidate()
        try:
            payload = response.json()
        except ValueError:
            payload = None
        return response.status_code, payload

    async def _reserve(self, state: OrderState) -> Outcome:
        items = [{"product_id": i["product_id"], "quantity": i["quantity"]} for i in state.items]
        status, body = await self._call(
            "products", "PUT", f"/reservations/{state.order_id}", {"items": items}
        )
        if status == 200:
            return Done([store.event("stock_reserved")])
        return _refusal(status, body, {409: "out_of_stock", 404: "unknown_product"})

    async def _authorize(self, state: OrderState) -> Outcome:
        status, body = await self._call(
            "payments",
            "POST",
            "/authorize",
            {
                "order_id": state.order_id,
                "amount_cents": state.total_cents,
                "card_token": state.card_token,
                "user_id": state.user_id,
            },
        )
        if status in (200, 201):
            return Done([store.event("payment_authorized", payment_id=body["id"])])
        if status == 402:
            reason = ((body or {}).get("extra") or {}).get("reason") or "payment_declined"
            return Failed(str(reason))
        return _refusal(status, body, {409: "payment_conflict"})

    async def _confirm(self, state: OrderState) -> Outcome:
        return Done([store.event("confirmed")])

    async def _release_stock(self, state: OrderState) -> Outcome:
        status, body = await self._call(
            "products", "POST", f"/reservations/{state.order_id}/release"
        )
        if status in (200, 409):  # released now, or there was nothing to release
            return Done([store.event("stock_released")])
        return Retry(f"release answered {status}: {body}")

    async def _void_payment(self, state: OrderState) -> Outcome:
        status, body = await self._call("payments", "POST", f"/{state.order_id}/void")
        if status in (200, 404):  # voided now, or no authorization was ever made
            return Done([store.event("payment_voided")])
        return Retry(f"void answered {status}: {body}")

    async def _cancel(self, state: OrderState) -> Outcome:
        return Done([store.event("cancelled", reason=state.reason or "unknown")])

    # -- the sweep -----------------------------------------------------------------------
    async def _sweep_forever(self) -> None:
        while True:
            try:
                for order_id in await self._orphans():
                    self.kick(order_id)
            except Exception:
                log.exception("saga sweep failed")
            await asyncio.sleep(self._settings.sweep_interval_s)

    async def _orphans(self) -> list[str]:
        """Unfinished orders whose lease is missing or expired."""
        found = await in_transaction(self._reader, _orphans_in, datetime.now(UTC))
        return [order_id for order_id in found if order_id not in self._driving]


_UNFINISHED = sorted(status.value for status in Status if status not in TERMINAL)
_ORPHANS = (
    select(OrderView.order_id)
    .outerjoin(SagaLease, SagaLease.order_id == OrderView.order_id)
    # the unfinished statuses named (not "not terminal"): the status index finds the
    # orders in flight, where NOT IN read every order ever placed, once a second
    .where(OrderView.status.in_(_UNFINISHED))
    .where((SagaLease.id.is_(None)) | (SagaLease.expires_at < bindparam("now")))
    .limit(100)
)


def _orphans_in(session: Executor, now: datetime) -> list[str]:
    return list(session.scalars(_ORPHANS, {"now": now}))


def _refusal(status: int, body: Any, reasons: dict[int, str]) -> Outcome:
    if status in reasons:
        return Failed(reasons[status])
    if status >= 500 or status in (401, 429):
        return Retry(f"answered {status}")
    return Failed(f"rejected_{status}")


_STEPS = {
    Action.RESERVE: SagaDriver._reserve,
    Action.AUTHORIZE: SagaDriver._authorize,
    Action.CONFIRM: SagaDriver._confirm,
    Action.RELEASE: SagaDriver._release_stock,
    Action.VOID: SagaDriver._void_payment,
    Action.CANCEL: SagaDriver._cancel,
}
