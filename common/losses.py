"""Training objectives as pure functions: two-view InfoNCE and supervised contrastive."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """NT-Xent (SimCLR): z1[i] and z2[i] are two views of sample i; the other 2B - 2 are negatives.

    z1, z2: B x d (any scale; rows are L2-normalised here). Returns a scalar.
    """
    if z1.shape != z2.shape or z1.dim() != 2 or z1.shape[0] < 2:
        raise ValueError(
            f"need two B x d views with B >= 2, got {tuple(z1.shape)}, {tuple(z2.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(logits, positives)


def supervised_contrastive(z: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """SupCon (Khosla et al. 2020, L_out): every same-label sample is a positive.

    z: B x d, labels: B int. Anchors without any positive are skipped. Returns a scalar.
    """
    if z.dim() != 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"need B x d and B labels, got {tuple(z.shape)}, {tuple(labels.shape)}")
    zn = F.normalize(z, dim=1)
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    logits = (zn @ zn.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    counts = pos.sum(dim=1)
    has = counts > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    mean_pos = log_prob.masked_fill(~pos, 0.0).sum(dim=1)[has] / counts[has]
    return -mean_pos.mean()
