"""The Prometheus scrape config: itself, Envoy, Jaeger, Toxiproxy and every service replica."""

from __future__ import annotations

from typing import Any

from system.runtime.topology import Topology

SCRAPE_INTERVAL = "2s"
"""Short, so before/during/after windows of a fault test hold enough samples."""


def _static(job: str, port: int, path: str = "/metrics", **labels: str) -> dict[str, Any]:
    target: dict[str, Any] = {"targets": [f"127.0.0.1:{port}"]}
    if labels:
        target["labels"] = labels
    return {"job_name": job, "metrics_path": path, "static_configs": [target]}


def prometheus_config(topology: Topology) -> dict[str, Any]:
    ports = topology.ports
    jobs = [
        _static("prometheus", ports.prometheus),
        _static("envoy", ports.envoy_admin, "/stats/prometheus"),
        _static("jaeger", ports.jaeger_metrics),
        _static("toxiproxy", ports.toxiproxy),
    ]
    for service in topology.services:
        jobs.append(
            {
                "job_name": service.name,
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{ports.replica(service, r)}"],
                        "labels": {"service": service.name, "replica": f"{service.name}-{r}"},
                    }
                    for r in range(1, service.replicas + 1)
                ],
            }
        )
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
            "external_labels": {"stack_port_base": str(topology.port_base)},
        },
        "scrape_configs": jobs,
    }
