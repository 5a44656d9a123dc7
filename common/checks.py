"""Input validation shared by the math modules: each failure is a ValueError naming the problem."""

from __future__ import annotations

import torch
from torch import Tensor

_SYMMETRY_RTOL = 1e-5


def check_finite(x: Tensor, what: str) -> None:
    """Raise ValueError if x holds NaN or Inf."""
    x = x.detach()
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{what} has {bad} non-finite value(s) (NaN or Inf)")


def check_gram(k: Tensor, what: str) -> None:
    """Raise ValueError unless k is a finite, square, symmetric 2-D matrix with N >= 2."""
    if k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{what} must be a square N x N matrix, got shape {tuple(k.shape)}")
    if k.shape[0] < 2:
        raise ValueError(f"{what} must have N >= 2, got N={k.shape[0]}")
    check_finite(k, what)
    k = k.detach()
    scale = float(k.abs().max()) or 1.0
    asym = float((k - k.T).abs().max())
    if asym > _SYMMETRY_RTOL * scale:
        raise ValueError(f"{what} is not symmetric (max |K - K^T| = {asym:.3g})")


def check_precision(p: Tensor | float, what: str) -> Tensor:
    """Return p as a float64 tensor; raise ValueError if any value is negative or non-finite."""
    t = torch.as_tensor(p, dtype=torch.float64)
    check_finite(t, what)
    if bool((t < 0).any()):
        raise ValueError(f"{what} has a negative precision (min {float(t.min()):.3g})")
    return t
