"""Anchor Gram matrices and linear CKA: the relational alignment channel of METHOD.md section 4."""

from __future__ import annotations

import torch
from torch import Tensor

from common.checks import check_finite, check_gram

_EPS = 1e-12


def center_gram(k: Tensor) -> Tensor:
    """H K H with H = I - 11^T / N, without forming H.

    k: N x N symmetric. Returns N x N whose rows and columns sum to zero.
    """
    check_gram(k, "gram")
    row_mean = k.mean(dim=1, keepdim=True)
    col_mean = k.mean(dim=0, keepdim=True)
    return k - row_mean - col_mean + k.mean()


def anchor_gram(z: Tensor) -> Tensor:
    """What a node sends: the centred, Frobenius-normalised linear Gram of L2-normalised rows.

    z: N x d embeddings of the node's own-modality anchors (N >= 2), in the global anchor order.
    Returns Kbar (N x N, symmetric, rows sum to zero, ||Kbar||_F = 1). Differentiable.
    A geometry with all anchors on one direction has a zero centred Gram; it is returned as
    zeros rather than divided by zero.
    """
    if z.dim() != 2:
        raise ValueError(f"anchor embeddings must be N x d, got shape {tuple(z.shape)}")
    if z.shape[0] < 2:
        raise ValueError(f"need at least 2 anchors for a Gram matrix, got {z.shape[0]}")
    check_finite(z, "anchor embeddings")
    zhat = z / z.norm(dim=1, keepdim=True).clamp_min(_EPS)
    k = normalise_gram(center_gram(zhat @ zhat.T))
    return 0.5 * (k + k.T)  # exactly symmetric despite rounding in matmul and centring


def normalise_gram(k: Tensor) -> Tensor:
    """K / ||K||_F (zeros stay zeros). k: N x N."""
    return k / k.norm().clamp_min(_EPS)


def cka(k: Tensor, t: Tensor) -> Tensor:
    """Linear CKA of two N x N Gram matrices: <Kc, Tc>_F / (||Kc||_F ||Tc||_F).

    Both are centred here, so raw, centred or normalised Grams may be passed. Differentiable in
    both arguments. 1.0 for identical geometry; invariant to rotation and scale of the
    embeddings that produced them. Computed in float64 and returned in k's dtype.
    """
    check_gram(k, "first gram")
    check_gram(t, "second gram")
    if k.shape != t.shape:
        raise ValueError(f"gram sizes differ: {tuple(k.shape)} vs {tuple(t.shape)}")
    kc = center_gram(k.double())
    tc = center_gram(t.double())
    value = (kc * tc).sum() / (kc.norm() * tc.norm()).clamp_min(_EPS)
    return value.to(k.dtype)


def feature_cka(x: Tensor, y: Tensor) -> Tensor:
    """Linear CKA computed in feature space (Kornblith et al. 2019, eq. 5).

    x: N x p, y: N x q. ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F). Equals cka(XX^T, YY^T);
    used as the reference in tests and for cheap evaluation when p, q << N.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need N x p and N x q, got {tuple(x.shape)} and {tuple(y.shape)}")
    xc = x.double() - x.double().mean(dim=0, keepdim=True)
    yc = y.double() - y.double().mean(dim=0, keepdim=True)
    num = (yc.T @ xc).norm() ** 2
    den = (xc.T @ xc).norm() * (yc.T @ yc).norm()
    return (num / den.clamp_min(_EPS)).to(x.dtype)


def gram_block(t: Tensor, index: Tensor) -> Tensor:
    """Rows and columns `index` of T: the target for a random subset of anchors.

    For linear kernels, re-centring the block of a centred Gram equals centring the Gram of the
    subset, so cka(anchor_gram(z[index]), gram_block(T, index)) is the subset's exact CKA.
    """
    check_gram(t, "target gram")
    return t.index_select(0, index).index_select(1, index)


def pack_upper(k: Tensor) -> Tensor:
    """Upper triangle (diagonal included) of a symmetric N x N matrix, row-major: N(N+1)/2."""
    check_gram(k, "gram")
    n = k.shape[0]
    rows, cols = torch.triu_indices(n, n)
    return k[rows, cols].clone()


def unpack_upper(values: Tensor, n: int) -> Tensor:
    """Inverse of pack_upper: rebuilds the symmetric N x N matrix."""
    expected = n * (n + 1) // 2
    if values.dim() != 1 or values.numel() != expected:
        raise ValueError(
            f"packed gram for N={n} needs {expected} values, got shape {tuple(values.shape)}"
        )
    check_finite(values, "packed gram")
    rows, cols = torch.triu_indices(n, n)
    k = torch.zeros(n, n, dtype=values.dtype, device=values.device)
    k[rows, cols] = values
    k[cols, rows] = values
    return k
