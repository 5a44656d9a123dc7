"""The node daemon's configuration: one TOML file.

    [node]   name (= the certificate's common name), coordinator address, data folders, state
    [tls]    ca, cert, key (PEM paths)
    [train]  local optimiser settings (common.config.TrainConfig); the coordinator sets the
             round's steps and CKA weight with each task

The model itself comes from the coordinator at Join, so every party builds the same one.
Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.config import TrainConfig, from_mapping
from common.daemon import ConfigError, read_toml_tables, resolve
from common.logs import FORMATS
from common.tls import TlsConfig


@dataclass(frozen=True, kw_only=True)
class NodeSection:
    name: str = ""  # this site's name: the common name of its certificate
    coordinator: str = "127.0.0.1:7443"  # host:port
    server_name: str = ""  # TLS name to verify on the coordinator's certificate ("" = host)
    data: str = ""  # private data folder (rosetta.data.v1)
    anchors: str = ""  # public anchor set folder (rosetta.anchors.v1)
    state_dir: str = "node-state"  # checkpoint, per-round log, final site model
    metrics_listen: str = "127.0.0.1:9465"  # Prometheus endpoint; "" = off
    max_samples: int = 0  # use at most this many private samples (seeded subset; 0 = all)
    device: str = "auto"  # overrides the federation model's device for this site
    threads: int = 0  # torch CPU threads (0 = torch's default)
    poll_s: float = 1.0  # heartbeat period while waiting for a round
    rpc_timeout_s: float = 60.0  # deadline of unary RPCs (transfers get 10x)
    retry_initial_s: float = 0.5  # backoff on UNAVAILABLE: initial, doubling, capped
    retry_max_s: float = 15.0
    give_up_s: float = 0.0  # stop retrying after this long without a coordinator (0 = never)
    log_format: str = "plain"
    log_level: str = "INFO"
    ready_file: str = ""  # written once the metrics endpoint listens: {"metrics_port", "pid"}

    def __post_init__(self) -> None:
        if self.log_format not in FORMATS:
            raise ValueError(f"node.log_format must be one of {FORMATS}")
        if self.max_samples < 0 or self.threads < 0:
            raise ValueError("node.max_samples and node.threads must be >= 0")
        for key in ("poll_s", "rpc_timeout_s", "retry_initial_s", "retry_max_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"node.{key} must be positive")


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    node: NodeSection
    tls: TlsConfig = field(default_factory=TlsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for key in ("name", "data", "anchors"):
            if not getattr(self.node, key):
                raise ValueError(f"node.{key} is required")


def load_node_config(path: Path) -> NodeConfig:
    doc = read_toml_tables(path, ("node", "tls", "train"))
    base = path.resolve().parent
    try:
        node = dict(doc.get("node", {}))
        for key in ("data", "anchors", "state_dir", "ready_file"):
            if key in node:
                node[key] = resolve(base, str(node[key]))
        tls = {k: resolve(base, str(v)) for k, v in doc.get("tls", {}).items()}
        return NodeConfig(
            node=from_mapping(NodeSection, node, "node"),
            tls=from_mapping(TlsConfig, tls, "tls"),
            train=from_mapping(TrainConfig, doc.get("train", {}), "train"),
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
