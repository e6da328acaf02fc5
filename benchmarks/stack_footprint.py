"""Time to ready and resident memory of the local stack's infrastructure.

    .venv/bin/python -m benchmarks.stack_footprint [--runs 3]

Each run starts the default topology on a free port base, waits for readiness, pushes a
little traffic through each component (Kafka produce/consume through the proxy, an OTLP
span, gateway requests) so memory is measured warm, reads every process's RSS, and stops
the stack. Prints one row per run and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from harness.localstack import free_port_base, local_stack
from system.runtime import control
from system.runtime.paths import StackPaths
from system.runtime.state import StackSettings

TOPIC = "orders.events"


async def kafka_traffic(bootstrap: str, messages: int = 2000) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, group_id="bench", auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()
    began = time.perf_counter()
    try:
        for i in range(messages):
            await producer.send(TOPIC, b"x" * 512, key=str(i).encode())
        await producer.flush()
        seen = 0
        while seen < messages:
            batch = await consumer.getmany(timeout_ms=1000)
            seen += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()
        await producer.stop()
    return time.perf_counter() - began


def warm_up(state: dict[str, Any]) -> float:
    ports = state["ports"]
    with httpx.Client() as http:
        for _ in range(200):
            http.get(f"http://127.0.0.1:{ports['gateway']}/api/v1/none")
        http.get(f"http://127.0.0.1:{ports['jaeger_query']}/api/v3/services")
        http.get(f"http://127.0.0.1:{ports['prometheus']}/api/v1/query", params={"query": "up"})
    return asyncio.run(kafka_traffic(f"127.0.0.1:{ports['kafka']}"))


def one_run(home: Path, index: int) -> dict[str, float]:
    settings = StackSettings(name=f"bench-{index}")
    settings = StackSettings(**{**settings.__dict__, "port_base": free_port_base(settings)})
    paths = StackPaths.for_stack(settings.name, home)
    began = time.perf_counter()
    with local_stack(paths, settings) as state:
        ready = time.perf_counter() - began
        kafka_seconds = warm_up(state)
        time.sleep(3)  # let a few Prometheus scrapes land before reading memory
        live = control.status(paths) or state
        rss = {p["name"]: (p.get("rss_bytes") or 0) / 2**20 for p in live["processes"]}
    return {
        "ready_s": ready,
        "kafka_2000_msgs_s": kafka_seconds,
        **rss,
        "total_mib": sum(rss.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-home-") as home:
        for i in range(args.runs):
            row = one_run(Path(home), i)
            rows.append(row)
            print(f"run {i + 1}: " + "  ".join(f"{k}={v:.1f}" for k, v in row.items()), flush=True)
    print(
        "median: " + "  ".join(f"{k}={statistics.median(r[k] for r in rows):.1f}" for k in rows[0])
    )


if __name__ == "__main__":
    main()
