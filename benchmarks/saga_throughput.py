"""Orders per second through the whole saga, on the real stack.

    .venv/bin/python -m benchmarks.saga_throughput [--rate 50] [--seconds 20] [--warmup 5]
    .venv/bin/python -m benchmarks.saga_throughput --rate 50,70,90,100 --repeat 2

Starts the default topology on a free port base (per-client rate limit lifted, the given
share of requests traced), creates products with plenty of stock, then places orders at
a fixed rate through the gateway for the given time (open loop: a slow system does not
slow the arrivals), after ``--warmup`` seconds (5) of the same load that are not
measured. Outcomes are read from the ``order.confirmed`` / ``order.cancelled`` events on
Kafka (polling every order would load the system more than the orders do).
Prints the achieved rate, the errors, and p50/p99 of (a) the 202 answer and (b)
place-to-confirmed (placement request sent → ``order.confirmed`` received), how many
consumer batches were redone one by one (deadlocks, conflicts), then where that time
goes: the steps' timestamps from the histories of up to 300 confirmed orders (read after
the measurement). Last, the CPU: per process, and a capacity model from the same stack
measured idle for ``--idle-seconds`` before the load (fixed cores + CPU per order → the
rate this machine's cores saturate at, and the cores ``--target`` orders/s would need).

Several rates (``--rate 50,70,90``) and ``--repeat N`` run each load on a fresh stack and
end with a table of the runs, the highest offered rate served with zero errors in every
run, and the highest that also kept p99 place-to-confirmed under ``--slo-ms`` (300): on
a shared machine one run says little (the same code varied by ~40% within an hour here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.cpu_share import CpuShare, capacity, machine_speed, replica_count
from harness.localstack import free_port_base, local_stack
from system.events.schemas import decode
from system.runtime.paths import StackPaths
from system.runtime.state import StackSettings
from system.runtime.topology import DEFAULT_TOPOLOGY_FILE

GATEWAY = """
[gateway]
client_rps = 1000000
shared_rps = 1000000
trace_sampling_percent = {sampling}
"""


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else float("nan")


async def one_order(
    client: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    product: str,
    results: dict[str, Any],
) -> None:
    began = time.perf_counter()
    try:
        async with client.post(
            url,
            json={"items": [{"product_id": product, "quantity": 1}], "card_token": "tok_visa_4242"},
            headers={**headers, "Idempotency-Key": secrets.token_hex(8)},
        ) as placed:
            status, body = placed.status, await placed.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        results["errors"].append(repr(exc))
        return
    if status != 202:
        results["errors"].append(status)
        return
    results["accept"].append(time.perf_counter() - began)
    results["placed"][json.loads(body)["order_id"]] = began


async def place_orders(
    url: str,
    headers: dict[str, str],
    products: list[str],
    rate: float,
    seconds: float,
    results: dict[str, Any],
) -> None:
    """``rate`` placements a second for ``seconds`` (open loop), each awaited to its end.

    Through aiohttp: the load generator shares the two cores, and httpx cost it ~2.3 ms
    of CPU per order (0.14 of a core at 60/s; aiohttp 0.06)."""
    connector = aiohttp.TCPConnector(limit=200)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        began = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            product = products[i % len(products)]
            tasks.append(asyncio.create_task(one_order(client, url, headers, product, results)))
        await asyncio.gather(*tasks)


_OUTCOMES = (b"order.confirmed", b"order.cancelled")


async def watch(bootstrap: str, results: dict[str, Any], stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        "orders.events", bootstrap_servers=bootstrap, auto_offset_reset="latest"
    )
    await consumer.start()
    try:
        await consumer.seek_to_end()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    if dict(record.headers or ()).get("event-type") not in _OUTCOMES:
                        continue  # order.placed: not decoded (the load generator shares the cores)
                    event = decode(record.value or b"")
                    # the record's timestamp is the relay's send (producer CreateTime)
                    handed = record.timestamp / 1000
                    results["outcome"][event.data.order_id] = (event.type, now, handed)
    finally:
        await consumer.stop()


STEPS = (
    ("request sent → placed", "sent", "placed"),
    ("placed → stock reserved", "placed", "stock_reserved"),
    ("reserved → payment authorized", "stock_reserved", "payment_authorized"),
    ("authorized → confirmed on Kafka", "payment_authorized", "seen"),
    ("  of which: authorized → relay sends", "payment_authorized", "handed"),
    ("  of which: relay sends → seen", "handed", "seen"),
)
"""The saga's path, timed by the events' ``occurred_at``; an event is stamped when its
step's work is done, before its transaction commits. The last step is split at the
moment the orders relay handed ``order.confirmed`` to its Kafka producer (the record's
timestamp): before it, the commit and the relay's wake-up, read and queue; after it,
the produce request, the broker and the load generator's fetch."""


async def steps(
    http: httpx.AsyncClient, headers: dict[str, str], results: dict[str, Any]
) -> dict[str, list[float]]:
    """Each step's durations over up to 300 confirmed orders, spread over the run."""
    confirmed = [
        o for o in results["placed"] if results["outcome"].get(o, ("",))[0] == "order.confirmed"
    ]
    sample = confirmed[:: max(1, len(confirmed) // 300)]
    wall = time.time() - time.perf_counter()  # perf_counter → epoch seconds
    gate = asyncio.Semaphore(20)
    durations: dict[str, list[float]] = {name: [] for name, _, _ in STEPS}

    async def one(order_id: str) -> None:
        async with gate:
            response = await http.get(f"/orders/{order_id}/history", headers=headers)
        if response.status_code != 200:
            return
        at = {
            e["type"]: datetime.fromisoformat(e["occurred_at"]).timestamp() for e in response.json()
        }
        at["sent"] = results["placed"][order_id] + wall
        _, seen, handed = results["outcome"][order_id]
        at["seen"], at["handed"] = seen + wall, handed
        for name, start, end in STEPS:
            if start in at and end in at:
                durations[name].append(at[end] - at[start])

    await asyncio.gather(*(one(o) for o in sample))
    return durations


def over_time(
    placed: dict[str, float],
    outcome: dict[str, tuple[str, float, float]],
    began: float,
    sent_in: float,
    windows: int = 6,
) -> list[str]:
    """Place-to-confirmed by when the order was placed, in ``windows`` equal slices of
    the sending time: a backlog that builds shows as a rising tail, a start-up transient
    as a first slice worse than the rest."""
    width = max(sent_in / windows, 1e-9)
    slices: list[list[float]] = [[] for _ in range(windows)]
    for order_id, sent in placed.items():
        kind, seen, _ = outcome.get(order_id, ("", 0.0, 0.0))
        if kind == "order.confirmed":
            slices[min(int((sent - began) / width), windows - 1)].append(seen - sent)
    lines = ["place-to-confirmed over the run (orders placed in each slice):"]
    for i, values in enumerate(slices):
        if len(values) > 1:
            lines.append(
                f"  {i * width:5.1f}-{(i + 1) * width:5.1f} s  {len(values):5d} orders  "
                f"p50 {pct(values, 50) * 1000:7.1f} ms   p99 {pct(values, 99) * 1000:7.1f} ms"
            )
    return lines


def where_it_goes(steps_done: dict[str, list[float]]) -> list[str]:
    counted = max((len(v) for v in steps_done.values()), default=0)
    lines = [f"where it goes ({counted} confirmed orders' histories):"]
    for name, values in steps_done.items():
        if len(values) > 1:
            lines.append(
                f"  {name:38s} p50 {pct(values, 50) * 1000:7.1f} ms   "
                f"p99 {pct(values, 99) * 1000:7.1f} ms"
            )
    return lines


async def batch_retries(state: dict[str, Any]) -> dict[str, float]:
    """``inbox_batch_retries_total`` of every service replica: the consumers' batches
    that were rolled back and redone one by one (on PostgreSQL, deadlocks show here)."""
    found: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for process in state["processes"]:
            if process.get("role") != "service":
                continue
            answer = await client.get(f"http://127.0.0.1:{process['ports']['http']}/metrics")
            for family in text_string_to_metric_families(answer.text):
                if family.name == "inbox_batch_retries":
                    for sample in family.samples:
                        if sample.name.endswith("_total") and sample.value:
                            found[process["name"]] = found.get(process["name"], 0) + sample.value
    return found


async def prepare(http: httpx.AsyncClient, data_dir: Path) -> tuple[dict[str, str], list[str]]:
    """The admin's headers, and eight products with plenty of stock to order."""
    password = (data_dir / "users" / "admin-password").read_text().strip()
    login = await http.post(
        "/users/login", json={"email": "admin@microharness.test", "password": password}
    )
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    products = []
    for _ in range(8):
        created = await http.post(
            "/products/",
            headers=headers,
            json={
                "sku": f"LOAD-{secrets.token_hex(4)}",
                "name": "load",
                "price_cents": 999,
                "initial_stock": 1_000_000,
            },
        )
        products.append(created.json()["id"])
    return headers, products


async def run(
    state: dict[str, Any],
    data_dir: Path,
    rate: float,
    seconds: float,
    *,
    idle_seconds: float = 10.0,
    target: float = 150.0,
    warmup: float = 5.0,
) -> dict[str, float]:
    """One measured load; prints its report and returns its headline figures.

    The load runs ``warmup`` seconds before the measured ``seconds`` begin, at the same
    rate and without a pause between the two: the first second of load on a fresh stack
    (connections opened, producers started, caches filled) answered in up to ten times
    the steady latency, and in a 20 s run those orders alone were the top percent, so
    the p99 measured the cold start. Orders placed in the warm-up count nowhere (their
    errors are reported); ``--warmup 0`` measures from the cold start."""
    base = f"http://127.0.0.1:{state['ports']['gateway']}/api/v1"
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    results: dict[str, Any] = {"accept": [], "errors": [], "placed": {}, "outcome": {}}
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
        headers, products = await prepare(http, data_dir)
        stop = asyncio.Event()
        bootstrap = f"127.0.0.1:{state['ports']['kafka']}"
        watcher = asyncio.create_task(watch(bootstrap, results, stop))
        await asyncio.sleep(2)  # the watcher's partitions are assigned
        with CpuShare(state) as idle:
            await asyncio.sleep(idle_seconds)
        url = f"{base}/orders/"
        warm: dict[str, Any] = {"accept": [], "errors": [], "placed": {}}
        warming = asyncio.create_task(place_orders(url, headers, products, rate, warmup, warm))
        await asyncio.sleep(warmup)
        share = CpuShare(state).__enter__()
        began = time.perf_counter()
        await place_orders(url, headers, products, rate, seconds, results)
        sent_in = time.perf_counter() - began
        await warming
        deadline = time.perf_counter() + 60
        while any(o not in results["outcome"] for o in results["placed"]):
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.2)
        share.__exit__(None, None, None)
        stop.set()
        await watcher
        results["began"] = began
        results["steps"] = await steps(http, headers, results)
        results["retried"] = await batch_retries(state)
    placed = results["placed"]
    outcome = {o: results["outcome"][o] for o in placed if o in results["outcome"]}
    if warmup:
        print(
            f"warm-up: {len(warm['placed'])} orders in {warmup:g} s before the measurement, "
            f"{len(warm['errors'])} errors {warm['errors'][:3]}"
        )
    confirm = [
        outcome[o][1] - t
        for o, t in placed.items()
        if outcome.get(o, ("",))[0] == "order.confirmed"
    ]
    cancelled = sum(outcome.get(o, ("",))[0] == "order.cancelled" for o in placed)
    # sustained: finished orders over the time from the first placement to the last outcome
    # (a backlog that drains after the sending stops lowers it below the offered rate)
    last = max((o[1] for o in outcome.values()), default=results["began"])
    finished_in = max(last - results["began"], sent_in)
    print(
        f"offered {rate:g} orders/s for {seconds:g} s (sent in {sent_in:.1f} s): "
        f"{len(confirm)} confirmed, {cancelled} cancelled, finished within {finished_in:.1f} s "
        f"({len(outcome) / finished_in:.1f}/s sustained), "
        f"{sum(o not in outcome for o in placed)} unfinished after 60 s, "
        f"{len(results['errors'])} errors {results['errors'][:3]}"
    )
    print(
        f"202 answer:         p50 {pct(results['accept'], 50) * 1000:7.1f} ms   "
        f"p99 {pct(results['accept'], 99) * 1000:7.1f} ms"
    )
    print(
        f"place-to-confirmed: p50 {pct(confirm, 50) * 1000:7.1f} ms   "
        f"p99 {pct(confirm, 99) * 1000:7.1f} ms"
    )
    retried = results["retried"]
    print(
        f"inbox batches redone one by one: {int(sum(retried.values()))}"
        + (
            f" ({', '.join(f'{k} {int(v)}' for k, v in sorted(retried.items()))})"
            if retried
            else ""
        )
    )
    for line in over_time(placed, outcome, results["began"], sent_in):
        print(line)
    for line in where_it_goes(results["steps"]):
        print(line)
    share.print(per=len(outcome), unit="order")
    capacity(idle, share, done=len(outcome), unit="order", target=target)
    return {
        "offered": rate,
        "sustained": len(outcome) / finished_in,
        "errors": len(results["errors"]),
        "unfinished": sum(o not in outcome for o in placed),
        "accept_p50": pct(results["accept"], 50),
        "accept_p99": pct(results["accept"], 99),
        "confirm_p50": pct(confirm, 50),
        "confirm_p99": pct(confirm, 99),
        "cpu_per_order": share.cores() * share.seconds / max(len(outcome), 1),
    }


def rates(value: str) -> list[float]:
    """``--rate 90`` or ``--rate 50,70,90``: the offered rates, each on a fresh stack."""
    try:
        parsed = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        parsed = []
    if not parsed or any(r <= 0 for r in parsed):
        raise argparse.ArgumentTypeError(f"expected rates > 0 separated by commas, got {value!r}")
    return parsed


def summary(runs: list[dict[str, float]], slo_ms: float) -> list[str]:
    """A line per run (``machine``: :func:`machine_speed` around it, lower is faster),
    then the highest offered rate that every run at that rate served
    with zero errors and nothing unfinished, and the highest that also kept the p99
    place-to-confirmed under ``slo_ms``."""
    lines = [
        f"{'offered':>8} {'sustained':>10} {'errors':>7} {'202 p50/p99 ms':>16} "
        f"{'confirmed p50/p99 ms':>21} {'CPU/order':>10} {'machine':>8}"
    ]
    for r in runs:
        failed = int(r["errors"] + r["unfinished"])
        lines.append(
            f"{r['offered']:>7g}/s {r['sustained']:>8.1f}/s {failed:>7d} "
            f"{r['accept_p50'] * 1000:>7.0f}/{r['accept_p99'] * 1000:<8.0f} "
            f"{r['confirm_p50'] * 1000:>10.0f}/{r['confirm_p99'] * 1000:<10.0f} "
            f"{r['cpu_per_order'] * 1000:>7.1f} ms {r['machine_s']:>7.2f}s"
        )
    clean: dict[float, bool] = {}
    within: dict[float, bool] = {}
    for r in runs:
        ok = r["errors"] == 0 and r["unfinished"] == 0
        clean[r["offered"]] = clean.get(r["offered"], True) and ok
        fast = ok and r["confirm_p99"] * 1000 < slo_ms
        within[r["offered"]] = within.get(r["offered"], True) and fast
    best_clean = max((rate for rate, ok in clean.items() if ok), default=None)
    best_fast = max((rate for rate, ok in within.items() if ok), default=None)
    lines.append(
        "highest offered rate with zero errors in every run: "
        + (f"{best_clean:g}/s" if best_clean is not None else "none")
    )
    lines.append(
        f"highest with p99 place-to-confirmed under {slo_ms:g} ms in every run: "
        + (f"{best_fast:g}/s" if best_fast is not None else "none")
    )
    return lines


def measure(args: argparse.Namespace, rate: float) -> dict[str, float]:
    """``rate`` on a stack of its own, started and stopped here."""
    with tempfile.TemporaryDirectory(prefix="bench-saga-") as home_name:
        home = Path(home_name)
        topology = home / "topology.toml"
        topology.write_text(
            DEFAULT_TOPOLOGY_FILE.read_text() + GATEWAY.replace("{sampling}", str(args.sampling))
        )
        settings = StackSettings(
            name="saga",
            topology_file=str(topology),
            database=args.database,
            replicas=dict(args.replicas),
        )
        settings = StackSettings(**{**settings.__dict__, "port_base": free_port_base(settings)})
        paths = StackPaths.for_stack("saga", home)
        before = machine_speed()
        # the load generator on uvloop, as the services are: it shares the two cores
        with (
            local_stack(paths, settings) as state,
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            figures = runner.run(
                run(
                    state,
                    paths.data,
                    rate,
                    args.seconds,
                    idle_seconds=args.idle_seconds,
                    target=args.target,
                    warmup=args.warmup,
                )
            )
    after = machine_speed()
    print(
        f"machine speed: 10 million Python additions took {before:.2f} s before the stack "
        f"started, {after:.2f} s after it stopped (lower is faster)"
    )
    return {**figures, "machine_s": (before + after) / 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rate", type=rates, default=[50.0], help="orders/s; several, comma-separated, sweep"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per rate")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--warmup", type=float, default=5, help="seconds of load before the measured ones"
    )
    parser.add_argument("--sampling", type=float, default=1.0)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="the idle window of the capacity model"
    )
    parser.add_argument(
        "--target", type=float, default=150.0, help="orders/s the capacity model sizes for"
    )
    parser.add_argument(
        "--slo-ms", type=float, default=300.0, help="the p99 place-to-confirmed the sweep checks"
    )
    parser.add_argument(
        "--replicas", action="append", default=[], metavar="SERVICE=N", type=replica_count
    )
    args = parser.parse_args()
    if args.idle_seconds < 1 or args.target <= 0 or args.seconds <= 0 or args.slo_ms <= 0:
        parser.error("--seconds, --target and --slo-ms must be > 0, --idle-seconds at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    plan = [rate for rate in args.rate for _ in range(args.repeat)]
    runs = []
    for n, rate in enumerate(plan, 1):
        if len(plan) > 1:
            print(f"\n=== run {n}/{len(plan)}: {rate:g} orders/s, a fresh stack ===", flush=True)
        runs.append(measure(args, rate))
    if len(plan) > 1:
        print()
        print("\n".join(summary(runs, args.slo_ms)))


if __name__ == "__main__":
    main()
