"""The single-node KRaft broker's ``server.properties``.

Clients dial the EXTERNAL listener through Toxiproxy, so that listener advertises the
proxy's port: otherwise a client would bypass the proxy after its first metadata call.
Broker-internal traffic uses INTERNAL, so the broker never depends on the proxy.
"""

from __future__ import annotations

from pathlib import Path

from system.runtime.topology import Topology

NODE_ID = 1


def kafka_properties(topology: Topology, log_dir: Path) -> dict[str, str]:
    ports = topology.ports
    return {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{ports.kafka_controller}",
        "listeners": (
            f"INTERNAL://127.0.0.1:{ports.kafka_internal},"
            f"EXTERNAL://127.0.0.1:{ports.kafka_external},"
            f"CONTROLLER://127.0.0.1:{ports.kafka_controller}"
        ),
        "advertised.listeners": (
            f"INTERNAL://127.0.0.1:{ports.kafka_internal},EXTERNAL://127.0.0.1:{ports.kafka}"
        ),
        "listener.security.protocol.map": (
            "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
        ),
        "inter.broker.listener.name": "INTERNAL",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(log_dir),
        "num.partitions": "3",
        "default.replication.factor": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
        # small footprint for one local node: the cleaner's default 128 MiB dedupe buffer
        # alone is most of the difference between ~175 and ~345 MiB resident
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        "num.network.threads": "1",
        "num.io.threads": "2",
        "background.threads": "2",
        "group.coordinator.threads": "1",
        "num.recovery.threads.per.data.dir": "1",
        "remote.log.manager.thread.pool.size": "1",
    }


def render_properties(properties: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in properties.items())
