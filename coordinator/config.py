"""The coordinator's configuration: one TOML file, frozen dataclasses, every key checked.

    [coordinator]  where it listens, where it keeps state, logs
    [tls]          ca, cert, key (PEM paths)
    [federation]   rounds, quorum, deadlines, round parameters sent to nodes, upload limits
    [nodes]        the admitted nodes: certificate name = "modality"
    [strategy]     the aggregation rule (coordinator.strategy.StrategyConfig)
    [model]        the model every party builds (common.config.ModelConfig)

Relative paths are resolved against the config file's folder. deploy/coordinator.toml is a
documented example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import MODALITIES, ModelConfig, from_mapping
from common.daemon import ConfigError, read_toml_tables, resolve
from common.logs import FORMATS
from common.tls import TlsConfig
from coordinator.rounds import RoundPolicy
from coordinator.strategy import StrategyConfig
from coordinator.validation import UploadLimits


@dataclass(frozen=True, kw_only=True)
class ServerSection:
    listen: str = "127.0.0.1:7443"  # host:port of the gRPC server; port 0 = any free port
    metrics_listen: str = "127.0.0.1:9464"  # Prometheus endpoint; "" = off
    state_dir: str = "coordinator-state"  # SQLite + safetensors of completed rounds
    export_dir: str = ""  # the exported global model; "" = <state_dir>/model
    anchors: str = ""  # the public anchor set folder (rosetta.anchors.v1)
    federation_id: str = "rosetta"
    log_format: str = "plain"  # or "json"
    log_level: str = "INFO"
    max_workers: int = 16  # gRPC server threads
    # Written once the servers listen: {"grpc_port", "metrics_port", "pid"} (for supervisors,
    # tests and `make demo`, which start it on port 0). "" = none.
    ready_file: str = ""
    # Debug/compliance: every protocol message received and sent, as JSON lines. "" = off.
    audit_log: str = ""
    tick_s: float = 0.5  # how often deadlines and node liveness are checked
    # Count TLS handshakes refused inside gRPC's core (coordinator.daemon.HandshakeWatch tees
    # stderr to see them); false leaves stderr untouched.
    count_tls_failures: bool = True

    def __post_init__(self) -> None:
        if self.log_format not in FORMATS:
            raise ValueError(f"coordinator.log_format must be one of {FORMATS}")
        if self.max_workers < 2 or not self.tick_s > 0:
            raise ValueError("coordinator.max_workers must be >= 2 and tick_s positive")


@dataclass(frozen=True, kw_only=True)
class FederationSection:
    rounds: int = 10
    min_nodes: int = 2  # quorum of uploads for a round to count
    start_nodes: int = 0  # nodes to wait for before round 1 (0 = min_nodes)
    round_timeout_s: float = 600.0
    grace_s: float = 60.0
    node_timeout_s: float = 30.0  # no heartbeat for this long: the node counts as gone
    local_steps: int = 50  # sent to nodes with each task
    cka_weight: float = 1.0  # lambda, sent to nodes with each task
    max_delta_norm: float = 10.0
    max_piece_bytes: int = 1 << 20
    max_upload_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if self.local_steps < 1 or not self.cka_weight >= 0:
            raise ValueError("federation.local_steps must be >= 1 and cka_weight >= 0")
        if not self.node_timeout_s > 0 or not self.max_delta_norm > 0:
            raise ValueError("federation.node_timeout_s and max_delta_norm must be positive")
        if self.max_piece_bytes < 1024 or self.max_upload_bytes < self.max_piece_bytes:
            raise ValueError("federation.max_piece_bytes must be >= 1024 and <= max_upload_bytes")

    def policy(self) -> RoundPolicy:
        return RoundPolicy(
            rounds=self.rounds,
            min_nodes=self.min_nodes,
            start_nodes=self.start_nodes,
            round_timeout_s=self.round_timeout_s,
            grace_s=self.grace_s,
        )

    def limits(self) -> UploadLimits:
        return UploadLimits(max_delta_norm=self.max_delta_norm)


@dataclass(frozen=True, kw_only=True)
class CoordinatorConfig:
    coordinator: ServerSection
    tls: TlsConfig = field(default_factory=TlsConfig)
    federation: FederationSection = field(default_factory=FederationSection)
    nodes: Mapping[str, str] = field(default_factory=dict)  # certificate name -> modality
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if not self.coordinator.anchors:
            raise ValueError("coordinator.anchors (the public anchor set folder) is required")
        if not self.nodes:
            raise ValueError('[nodes] must admit at least one node: name = "modality"')
        for name, modality in self.nodes.items():
            if modality not in self.model.modalities:
                raise ValueError(
                    f"nodes.{name}: modality {modality!r} is not one of the model's "
                    f"{self.model.modalities} (allowed: {MODALITIES})"
                )
        if self.federation.min_nodes > len(self.nodes):
            raise ValueError(
                f"federation.min_nodes ({self.federation.min_nodes}) exceeds the "
                f"{len(self.nodes)} admitted nodes"
            )

    @property
    def export_dir(self) -> Path:
        return Path(self.coordinator.export_dir or Path(self.coordinator.state_dir) / "model")


def load_coordinator_config(path: Path) -> CoordinatorConfig:
    doc = read_toml_tables(path, ("coordinator", "tls", "federation", "nodes", "strategy", "model"))
    base = path.resolve().parent
    try:
        server = dict(doc.get("coordinator", {}))
        for key in ("state_dir", "export_dir", "anchors", "ready_file", "audit_log"):
            if key in server:
                server[key] = resolve(base, str(server[key]))
        tls = {k: resolve(base, str(v)) for k, v in doc.get("tls", {}).items()}
        nodes = doc.get("nodes", {})
        if not all(isinstance(v, str) for v in nodes.values()):
            raise ValueError('[nodes] entries must be name = "modality"')
        return CoordinatorConfig(
            coordinator=from_mapping(ServerSection, server, "coordinator"),
            tls=from_mapping(TlsConfig, tls, "tls"),
            federation=from_mapping(FederationSection, doc.get("federation", {}), "federation"),
            nodes=dict(nodes),
            strategy=from_mapping(StrategyConfig, doc.get("strategy", {}), "strategy"),
            model=from_mapping(ModelConfig, doc.get("model", {}), "model"),
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def with_section(cfg: CoordinatorConfig, section: str, **changes: Any) -> CoordinatorConfig:
    """A copy with some keys of one section changed (tests, `make demo`)."""
    return dataclasses.replace(
        cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)}
    )
