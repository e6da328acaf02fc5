"""Catalog read through the gateway against a trivial Litestar handler behind the same Envoy.

    .venv/bin/python -m benchmarks.catalog_read [--seconds 10] [--connections 32]

Starts the real stack plus a ``trivial`` service (``benchmarks/trivial_service.py``) on a
free port base, with the per-client rate limit lifted, creates a product, then runs wrk
(one thread, the same connections and duration) against, in one run:

* ``GET /api/v1/trivial/hello``         a trivial handler behind the gateway (the baseline);
* ``GET /api/v1/products/{id}``         the catalog read: JWT check at Envoy and in the
                                         service, one SELECT, OTel spans, metrics;
* the same two straight at the replica (no Envoy), for reference.

Prints requests/s and p50/p99 per target, and the catalog-to-trivial ratio (target ≥ 0.70).
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx

from benchmarks.cpu_share import CpuShare, replica_count
from harness.localstack import free_port_base, local_stack
from system.runtime.paths import StackPaths
from system.runtime.state import StackSettings
from system.runtime.topology import DEFAULT_TOPOLOGY_FILE

BENCH_TOPOLOGY = """
[gateway]
client_rps = 1000000
shared_rps = 1000000
trace_sampling_percent = {sampling}

[services.trivial]
command = ["{python}", "-m", "benchmarks.trivial_service"]
public_paths = ["/hello"]
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(
    url: str,
    *,
    seconds: int,
    connections: int,
    headers: dict[str, str],
    script: Path | None = None,
) -> dict[str, float]:
    """One wrk run (``script``: a Lua file, e.g. to POST a body): req/s, p50/p99 ms, and
    how many answers were not 2xx/3xx."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        args += ["-s", str(script)]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {
        p: float(v) * _UNITS[u]
        for p, v, u in re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": latency.get("50", float("nan")),
        "p99_ms": latency.get("99", float("nan")),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def prepare(state: dict[str, Any], data_dir: Path) -> tuple[str, dict[str, str]]:
    base = f"http://127.0.0.1:{state['ports']['gateway']}/api/v1"
    with httpx.Client(base_url=base, timeout=10) as http:
        password = (data_dir / "users" / "admin-password").read_text().strip()
        login = http.post(
            "/users/login", json={"email": "admin@microharness.test", "password": password}
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        product = http.post(
            "/products/",
            headers=headers,
            json={
                "sku": f"BENCH-{secrets.token_hex(3)}",
                "name": "Benchmark lamp",
                "price_cents": 1999,
                "initial_stock": 10,
            },
        )
        product.raise_for_status()
    return product.json()["id"], headers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--sampling",
        type=float,
        default=100.0,
        help="percent of requests traced (gateway.trace_sampling_percent)",
    )
    parser.add_argument(
        "--replicas", action="append", default=[], metavar="SERVICE=N", type=replica_count
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as home_name:
        home = Path(home_name)
        topology = home / "topology.toml"
        topology.write_text(
            DEFAULT_TOPOLOGY_FILE.read_text()
            + BENCH_TOPOLOGY.replace("{sampling}", str(args.sampling))
        )
        settings = StackSettings(
            name="bench", topology_file=str(topology), replicas=dict(args.replicas)
        )
        settings = StackSettings(**{**settings.__dict__, "port_base": free_port_base(settings)})
        paths = StackPaths.for_stack("bench", home)
        with local_stack(paths, settings) as state:
            product_id, headers = prepare(state, paths.data)
            gateway = f"http://127.0.0.1:{state['ports']['gateway']}/api/v1"
            replica = {p["name"]: p["ports"].get("http") for p in state["processes"]}
            targets = {
                "trivial via gateway": (f"{gateway}/trivial/hello", headers),
                "catalog via gateway": (f"{gateway}/products/{product_id}", headers),
                "trivial direct": (f"http://127.0.0.1:{replica['trivial-1']}/hello", {}),
                "catalog direct (products-1)": (
                    f"http://127.0.0.1:{replica['products-1']}/{product_id}",
                    headers,
                ),
            }
            wrk(
                targets["trivial via gateway"][0],
                seconds=2,
                connections=args.connections,
                headers=headers,
            )  # warm-up
            results, shares = {}, {}
            for name, (url, h) in targets.items():
                with CpuShare(state) as shares[name]:
                    results[name] = wrk(
                        url, seconds=args.seconds, connections=args.connections, headers=h
                    )
    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds}s, one run each, same stack, "
        f"{args.sampling:g}% of requests traced"
    )
    print(f"{'target':32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in results.items():
        print(
            f"{name:32} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['non_2xx']:8.0f}"
        )
    for name in ("trivial via gateway", "catalog via gateway"):
        print(f"{name}: ", end="")
        shares[name].print(per=results[name]["rps"] * args.seconds, unit="request")
    ratio = results["catalog via gateway"]["rps"] / results["trivial via gateway"]["rps"]
    print(f"catalog / trivial through the gateway: {ratio:.2f} (target >= 0.70)")
    print(json.dumps({"ratio": round(ratio, 3), **{k: v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
