"""Diagonal empirical-Fisher precision from gradients local training already computes (METHOD.md 5).

A diagonal Laplace approximation of the posterior over the shared parameters after a round:
precision_i ~= n_samples * F_ii + prior, where the empirical Fisher F_ii of one sample is
estimated from mini-batch gradients g as batch_size * mean_steps(g_i^2) (the mean of B
per-sample gradients has about 1/B of their second moment when the mean gradient is small).
Nothing extra is back-propagated: the estimator reads .grad after each backward pass.

The empirical Fisher grows with the gradients, so a node whose private data are corrupted (a
noisy sensor) would get MORE precision than a clean one. `anchor_coverage` is the data-quality
factor that counters it: how close the node's private samples lie to the public anchors of its
modality, relative to how close the anchors lie to each other. Nodes scale their sample count by
coverage**power (an effective sample size) before it enters the Laplace precision.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from common.checks import check_finite


def anchor_coverage(z_private: Tensor, z_anchors: Tensor) -> float:
    """Mean nearest-anchor cosine of private samples / mean nearest-other-anchor cosine of anchors.

    About 1 when private data come from the anchors' distribution (a private sample is as close
    to its nearest anchor as an anchor is to its nearest other anchor), towards 0 when they lie
    off it (noise, drift, a broken sensor). Clamped to [0, 1]. z_private (n, d), z_anchors (N, d)
    with N >= 2; rows need not be normalised.
    """
    if z_anchors.dim() != 2 or z_anchors.shape[0] < 2:
        raise ValueError(f"need at least 2 anchor embeddings, got shape {tuple(z_anchors.shape)}")
    if z_private.dim() != 2 or z_private.shape[0] == 0 or z_private.shape[1] != z_anchors.shape[1]:
        raise ValueError(
            f"private embeddings of shape {tuple(z_private.shape)} do not match anchors "
            f"{tuple(z_anchors.shape)}"
        )
    a = torch.nn.functional.normalize(z_anchors.double(), dim=1)
    p = torch.nn.functional.normalize(z_private.double(), dim=1)
    aa = a @ a.T
    aa.fill_diagonal_(-2.0)  # leave one out
    reference = float(aa.max(dim=1).values.mean())
    observed = float((p @ a.T).max(dim=1).values.mean())
    if reference <= 0.0:
        return 1.0 if observed >= reference else 0.0
    return min(1.0, max(0.0, observed / reference))


class DiagonalFisher:
    """Accumulates squared gradients per parameter over the steps of one round.

    prior: precision added to every element (a weak Gaussian prior keeps precisions > 0).
    """

    def __init__(self, prior: float = 1e-8) -> None:
        if not prior >= 0.0:
            raise ValueError(f"prior precision must be >= 0, got {prior}")
        self.prior = prior
        self._sq: dict[str, Tensor] = {}
        self.steps = 0

    def reset(self) -> None:
        """Start a new round."""
        self._sq.clear()
        self.steps = 0

    def observe(self, named_grads: Iterable[tuple[str, Tensor | None]], batch_size: int) -> None:
        """Add one step's mini-batch gradients (name, grad); None grads count as zero."""
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        for name, g in named_grads:
            if g is None:
                continue
            sq = g.detach().float().square() * float(batch_size)
            if name in self._sq:
                self._sq[name] += sq
            else:
                self._sq[name] = sq
        self.steps += 1

    def per_element(self, n_samples: float) -> dict[str, Tensor]:
        """Laplace precision per element: n_samples * F + prior (float32, same shapes as grads)."""
        if self.steps == 0:
            raise ValueError("no gradients observed: precision is undefined before training")
        if n_samples <= 0:
            raise ValueError(f"n_samples must be positive, got {n_samples}")
        out = {}
        for name, sq in self._sq.items():
            p = float(n_samples) * sq / self.steps + self.prior
            check_finite(p, f"precision of {name!r}")
            out[name] = p
        return out

    def per_tensor(self, n_samples: float) -> dict[str, float]:
        """One precision per tensor: the mean of its per-element precisions."""
        return {k: float(v.double().mean()) for k, v in self.per_element(n_samples).items()}

    def node_precision(self, n_samples: float) -> float:
        """One scalar w_k for the node [choice]: the mean per-element precision over all
        observed shared parameters (numel-weighted mean of per_tensor)."""
        elems = self.per_element(n_samples)
        total = sum(float(v.double().sum()) for v in elems.values())
        count = sum(v.numel() for v in elems.values())
        return total / count
