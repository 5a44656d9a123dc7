"""The coordinator's Prometheus metrics (docs/METRICS.md lists them); one registry per process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

ROUND_STATES = ["waiting_for_nodes", "training", "aggregating", "done"]
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0)
ROUND_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class CoordinatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.rounds_completed = Counter(
            "rosetta_coordinator_rounds_completed",
            "Rounds aggregated and durably committed by this process",
            registry=r,
        )
        self.round = Gauge(
            "rosetta_coordinator_round", "The current round number (last committed + 1)", registry=r
        )
        self.last_completed_round = Gauge(
            "rosetta_coordinator_last_completed_round",
            "The newest durably committed round (survives restarts)",
            registry=r,
        )
        self.round_state = Enum(
            "rosetta_coordinator_round_state",
            "State of the round state machine",
            states=ROUND_STATES,
            registry=r,
        )
        self.transitions = Counter(
            "rosetta_coordinator_round_transitions",
            "Round state transitions",
            ["from_state", "to_state"],
            registry=r,
        )
        self.nodes_connected = Gauge(
            "rosetta_coordinator_nodes_connected",
            "Joined nodes with a recent heartbeat",
            registry=r,
        )
        self.uploads_accepted = Counter(
            "rosetta_coordinator_uploads_accepted",
            "Uploads that counted towards a round",
            registry=r,
        )
        self.uploads_rejected = Counter(
            "rosetta_coordinator_uploads_rejected",
            "Uploads discarded, by reason",
            ["reason"],
            registry=r,
        )
        self.auth_rejections = Counter(
            "rosetta_coordinator_auth_rejections",
            "Requests refused for identity reasons (unknown name, claimed name, wrong modality)",
            ["reason"],
            registry=r,
        )
        self.received_bytes = Counter(
            "rosetta_coordinator_received_bytes", "Protocol message bytes received", registry=r
        )
        self.sent_bytes = Counter(
            "rosetta_coordinator_sent_bytes", "Protocol message bytes sent", registry=r
        )
        self.round_duration = Histogram(
            "rosetta_coordinator_round_duration_seconds",
            "Wall time from a round's start to its commit",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.consensus_cka = Gauge(
            "rosetta_coordinator_consensus_cka",
            "CKA of each modality's mean anchor Gram with the new consensus target",
            ["modality"],
            registry=r,
        )
        self.modality_weight = Gauge(
            "rosetta_coordinator_modality_weight",
            "Weight omega_m of each modality in the consensus target",
            ["modality"],
            registry=r,
        )
        self.rpc_duration = Histogram(
            "rosetta_coordinator_rpc_duration_seconds",
            "Server-side RPC latency by method and status code",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
