"""Diagonal empirical-Fisher precision from gradients local training already computes (METHOD.md 5).

A diagonal Laplace approximation of the posterior over the shared parameters after a round:
precision_i ~= n_samples * F_ii + prior, where the empirical Fisher F_ii of one sample is
estimated from mini-batch gradients g as batch_size * mean_steps(g_i^2) (the mean of B
per-sample gradients has about 1/B of their second moment when the mean gradient is small).
Nothing extra is back-propagated: the estimator reads .grad after each backward pass.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from common.checks import check_finite


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

    def per_element(self, n_samples: int) -> dict[str, Tensor]:
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

    def per_tensor(self, n_samples: int) -> dict[str, float]:
        """One precision per tensor: the mean of its per-element precisions."""
        return {k: float(v.double().mean()) for k, v in self.per_element(n_samples).items()}

    def node_precision(self, n_samples: int) -> float:
        """One scalar w_k for the node [choice]: the mean per-element precision over all
        observed shared parameters (numel-weighted mean of per_tensor)."""
        elems = self.per_element(n_samples)
        total = sum(float(v.double().sum()) for v in elems.values())
        count = sum(v.numel() for v in elems.values())
        return total / count
