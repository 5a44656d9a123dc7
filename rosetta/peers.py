"""Peer baselines that share MORE than Rosetta, for the benchmark's comparison only.

- anchor-embedding sharing (CreamFL-style): each node sends its anchors' embeddings (N x d);
  the server averages them per anchor; nodes pull their anchor embeddings towards that table.
- prototype sharing (FedProto-style, without labels): each node sends, per anchor, the mean
  embedding of the private samples whose nearest anchor it is (and their count); the server
  takes count-weighted means; nodes pull their anchor embeddings towards those prototypes.
Both are statistics of embeddings: exactly what Rosetta's protocol never sends.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from node.training import LocalTrainer, take

PEERS = ("none", "anchor_embeddings", "prototypes")


def payload(kind: str, trainer: LocalTrainer, max_private: int = 512) -> tuple[Tensor, Tensor]:
    """(table N x d, weights N) a node would send for a peer baseline."""
    anchors = trainer.embed(trainer.anchors)
    if kind == "anchor_embeddings":
        return anchors, torch.ones(anchors.shape[0])
    if kind == "prototypes":
        n = min(trainer.n_samples, max_private)
        z = trainer.embed(take(trainer.data, torch.arange(n)))
        nearest = (F.normalize(z, dim=1) @ F.normalize(anchors, dim=1).T).argmax(dim=1)
        sums = torch.zeros_like(anchors).index_add_(0, nearest, F.normalize(z, dim=1))
        counts = torch.bincount(nearest, minlength=anchors.shape[0]).float()
        return sums / counts.clamp_min(1.0)[:, None], counts
    raise ValueError(f"unknown peer baseline {kind!r}")


class PeerTable:
    """Weighted per-anchor mean of the nodes' tables."""

    def __init__(self) -> None:
        self.sums: Tensor | None = None
        self.weights: Tensor | None = None

    def add(self, table: Tensor, weights: Tensor) -> None:
        part = F.normalize(table, dim=1) * weights[:, None]
        self.sums = part if self.sums is None else self.sums + part
        self.weights = weights.clone() if self.weights is None else self.weights + weights

    def mean(self) -> Tensor:
        assert self.sums is not None and self.weights is not None
        return self.sums / self.weights.clamp_min(1e-12)[:, None]


def pull_towards(
    table: Tensor, weight: float, temperature: float = 0.1
) -> Callable[[Tensor, Tensor], Tensor]:
    """Auxiliary loss: anchor j's embedding should be nearest to row j of the shared table."""
    targets = F.normalize(table, dim=1)

    def loss(sub: Tensor, za: Tensor) -> Tensor:
        logits = F.normalize(za, dim=1) @ targets.to(za).T / temperature
        return weight * F.cross_entropy(logits, sub.to(za.device))

    return loss
