"""The node daemon's Prometheus metrics (docs/METRICS.md lists them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TRAIN_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800)
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0)


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.rounds_completed = Counter(
            "rosetta_node_rounds_completed",
            "Rounds trained and accepted by the coordinator",
            registry=r,
        )
        self.last_round = Gauge(
            "rosetta_node_last_round",
            "The newest round this node's upload was accepted for",
            registry=r,
        )
        self.training_seconds = Histogram(
            "rosetta_node_training_seconds",
            "Local training time per round",
            buckets=TRAIN_BUCKETS,
            registry=r,
        )
        self.samples_per_second = Gauge(
            "rosetta_node_samples_per_second", "Training throughput of the last round", registry=r
        )
        self.loss = Gauge("rosetta_node_loss", "Mean local loss of the last round", registry=r)
        self.cka_to_target = Gauge(
            "rosetta_node_cka_to_target",
            "CKA of this node's anchor Gram with the round's consensus target (NaN in round 1)",
            registry=r,
        )
        self.data_coverage = Gauge(
            "rosetta_node_data_coverage",
            "How close the private data lie to the public anchors (1 = same distribution; "
            "low = noisy or drifting data); scales the precisions sent",
            registry=r,
        )
        self.sent_bytes = Counter(
            "rosetta_node_sent_bytes", "Protocol message bytes sent", registry=r
        )
        self.received_bytes = Counter(
            "rosetta_node_received_bytes", "Protocol message bytes received", registry=r
        )
        self.rpc_duration = Histogram(
            "rosetta_node_rpc_duration_seconds",
            "Client-side RPC latency by method and status code",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "rosetta_node_rpc_retries",
            "RPCs retried after UNAVAILABLE or a deadline",
            ["method"],
            registry=r,
        )
        self.connected = Gauge(
            "rosetta_node_connected", "1 while the coordinator answers, else 0", registry=r
        )
