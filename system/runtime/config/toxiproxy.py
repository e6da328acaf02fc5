"""Toxiproxy's start-up proxy list: one proxy in front of Kafka (and, later, each database)."""

from __future__ import annotations

from typing import Any

from system.runtime.topology import Topology


def toxiproxy_config(topology: Topology) -> list[dict[str, Any]]:
    return [
        {
            "name": proxy.name,
            "listen": f"127.0.0.1:{proxy.listen}",
            "upstream": f"127.0.0.1:{proxy.upstream}",
            "enabled": True,
        }
        for proxy in topology.proxies
    ]
