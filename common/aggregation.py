"""Coordinator-side aggregation rules of METHOD.md section 5, as pure functions on tensors.

Why averaging B is enough: every party applies the same frozen basis A (common.subspace), so
mean_k(B_k) A = mean_k(B_k A) exactly; the subspace is stable across nodes and rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from common.alignment import center_gram, normalise_gram
from common.checks import check_finite, check_gram, check_precision

StateDelta = Mapping[str, Tensor]
Precision = Mapping[str, Tensor | float]


class PrecisionWeightedSum:
    """Running sums sum_k pi_k * dB_k and sum_k pi_k, one tensor each per parameter name.

    Memory is one copy of the shared state (twice), whatever the number of nodes: the
    coordinator adds each upload as it arrives and drops it. `pi` may be a scalar per tensor or
    a tensor of the delta's shape (per element). Sums are float64; the result is cast back.
    """

    def __init__(self) -> None:
        self._num: dict[str, Tensor] = {}
        self._den: dict[str, Tensor] = {}
        self._dtype: dict[str, torch.dtype] = {}
        self.count = 0

    def add(self, delta: StateDelta, precision: Precision) -> None:
        """Fold one node's delta in. Keys must match the first node's exactly."""
        self.commit(self.stage(delta, precision))

    def stage(
        self, delta: StateDelta, precision: Precision
    ) -> dict[str, tuple[Tensor, Tensor, torch.dtype]]:
        """Validate one node's delta and precisions without changing the sums (ValueError if bad)."""
        if not delta:
            raise ValueError("delta is empty")
        if set(precision) != set(delta):
            missing = sorted(set(delta) ^ set(precision))
            raise ValueError(f"precision keys differ from delta keys: {missing[:5]}")
        if self._num and set(delta) != set(self._num):
            diff = sorted(set(delta) ^ set(self._num))
            raise ValueError(f"delta keys differ between nodes: {diff[:5]}")
        staged: dict[str, tuple[Tensor, Tensor, torch.dtype]] = {}
        for name, d in delta.items():
            check_finite(d, f"delta {name!r}")
            pi = check_precision(precision[name], f"precision of {name!r}")
            if pi.dim() > 0 and pi.shape != d.shape:
                raise ValueError(
                    f"precision of {name!r} has shape {tuple(pi.shape)}, "
                    f"expected a scalar or {tuple(d.shape)}"
                )
            if name in self._num and self._num[name].shape != d.shape:
                raise ValueError(
                    f"delta {name!r} has shape {tuple(d.shape)}, "
                    f"another node sent {tuple(self._num[name].shape)}"
                )
            staged[name] = (d.double(), pi.to(d.device), d.dtype)
        return staged

    def commit(self, staged: Mapping[str, tuple[Tensor, Tensor, torch.dtype]]) -> None:
        """Add a staged upload to the sums."""
        for name, (d64, pi, dtype) in staged.items():
            weighted = d64 * pi
            den = pi.expand_as(d64) if pi.dim() == 0 else pi
            if name in self._num:
                self._num[name] += weighted
                self._den[name] += den
            else:
                self._num[name] = weighted.clone()
                self._den[name] = den.clone()
                self._dtype[name] = dtype
        self.count += 1

    def mean(self) -> dict[str, Tensor]:
        """sum pi dB / sum pi per element; where all precisions are zero the mean is zero."""
        if self.count == 0:
            raise ValueError("no deltas were added")
        out = {}
        for name, num in self._num.items():
            den = self._den[name]
            safe = torch.where(den > 0, den, torch.ones_like(den))
            out[name] = torch.where(den > 0, num / safe, torch.zeros_like(num)).to(
                self._dtype[name]
            )
        return out


def precision_weighted_mean(
    deltas: Sequence[StateDelta], precisions: Sequence[Precision]
) -> dict[str, Tensor]:
    """sum_k pi_k dB_k / sum_k pi_k for every parameter name.

    deltas: one mapping name -> tensor per node (same keys and shapes at every node).
    precisions: one mapping name -> scalar (per tensor) or tensor of the delta's shape
    (per element) per node; non-negative and finite. Equal precisions give the plain mean.
    """
    if len(deltas) == 0:
        raise ValueError("no deltas to aggregate")
    if len(deltas) != len(precisions):
        raise ValueError(f"{len(deltas)} deltas but {len(precisions)} precision sets")
    acc = PrecisionWeightedSum()
    for d, p in zip(deltas, precisions, strict=True):
        acc.add(d, p)
    return acc.mean()


def fedavg_mean(deltas: Sequence[StateDelta], sample_counts: Sequence[int]) -> dict[str, Tensor]:
    """Plain FedAvg (McMahan et al. 2017): sum_k n_k dB_k / sum_k n_k. The baseline rule."""
    if len(deltas) != len(sample_counts):
        raise ValueError(f"{len(deltas)} deltas but {len(sample_counts)} sample counts")
    if any(int(n) <= 0 for n in sample_counts):
        raise ValueError(f"sample counts must be positive, got {list(sample_counts)}")
    return precision_weighted_mean(
        deltas, [dict.fromkeys(d, float(n)) for d, n in zip(deltas, sample_counts, strict=True)]
    )


def consensus_gram(
    grams: Sequence[Tensor],
    weights: Sequence[float],
    modalities: Sequence[str],
    modality_weights: Mapping[str, float] | None = None,
) -> Tensor:
    """The consensus target T (METHOD.md section 5):

        T = normalise( sum_m omega_m * sum_{k in m} w_k Kbar_k / sum_{k in m} w_k )


    grams: Kbar_k (N x N, symmetric) per node; weights: w_k >= 0 per node; modalities: m(k) per
    node. modality_weights: omega_m per modality (default: equal, so a modality with many
    nodes does not dominate); modalities missing from it get zero weight. Each Gram is
    re-centred and re-normalised first, so raw Grams are accepted. A modality whose node
    weights are all zero is left out. Returns T normalised like `anchor_gram`.
    """
    if len(grams) == 0:
        raise ValueError("no grams to build a consensus from")
    if not len(grams) == len(weights) == len(modalities):
        raise ValueError(
            f"got {len(grams)} grams, {len(weights)} weights, {len(modalities)} modalities"
        )
    n = grams[0].shape[0]
    for i, g in enumerate(grams):
        check_gram(g, f"gram of node {i}")
        if g.shape[0] != n:
            raise ValueError(f"gram of node {i} is {g.shape[0]} x {g.shape[0]}, expected N={n}")
    w = [float(check_precision(x, f"weight of node {i}")) for i, x in enumerate(weights)]
    per_modality: dict[str, tuple[Tensor, float]] = {}
    for g, wk, m in zip(grams, w, modalities, strict=True):
        kbar = normalise_gram(center_gram(g.double()))
        acc, total = per_modality.get(m, (torch.zeros(n, n, dtype=torch.float64), 0.0))
        per_modality[m] = (acc + wk * kbar, total + wk)
    omega = modality_weights or dict.fromkeys(per_modality, 1.0)
    target = torch.zeros(n, n, dtype=torch.float64)
    used = 0.0
    for m, (acc, total) in per_modality.items():
        om = float(check_precision(omega.get(m, 0.0), f"modality weight of {m!r}"))
        if total > 0 and om > 0:
            target += om * acc / total
            used += om
    if used == 0.0:
        raise ValueError("all node and modality weights are zero: no consensus can be formed")
    t = normalise_gram(center_gram(target))
    return (0.5 * (t + t.T)).to(grams[0].dtype)


def knn_denoise(gram: Tensor, k: int) -> Tensor:
    """Blend a consensus Gram with its symmetrised k-nearest-neighbour graph.

    Each anchor keeps edges to its k most similar anchors (W_ij = 1/2 per direction); the result
    is normalise(centre(W / ||W|| + K / ||K||)). Sharper cluster structure than K alone, with no
    knowledge of concepts or classes: only the Gram's own ranking of similarities.
    gram: N x N symmetric; 1 <= k < N. Returns N x N, normalised like `anchor_gram`.
    """
    check_gram(gram, "gram")
    n = gram.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"need 1 <= k < N, got k={k}, N={n}")
    g = gram.double()
    scores = g.masked_fill(torch.eye(n, dtype=torch.bool, device=g.device), float("-inf"))
    nearest = scores.topk(k, dim=1).indices
    w = torch.zeros_like(g).scatter_(1, nearest, 1.0)
    w = 0.5 * (w + w.T)
    k_part = normalise_gram(center_gram(g))
    out = normalise_gram(center_gram(w / w.norm() + k_part))
    return (0.5 * (out + out.T)).to(gram.dtype)


def _affinity(gram: Tensor, k: int) -> Tensor:
    """Gaussian affinity of a Gram's implied distances, scaled per pair by the mean distance of
    each anchor to its k nearest neighbours (the local scaling of similarity network fusion)."""
    diag = torch.diagonal(gram)
    dist2 = (diag[:, None] + diag[None, :] - 2 * gram).clamp_min(0.0)
    dist = dist2.sqrt()
    local = dist.sort(dim=1).values[:, 1 : k + 1].mean(dim=1)
    eps = (local[:, None] + local[None, :] + dist) / 3
    return torch.exp(-dist2 / (0.5 * eps.square() + 1e-12))


def _status_matrix(w: Tensor) -> Tensor:
    """Row-normalised with a fixed self-similarity of 1/2 (SNF's full kernel P)."""
    w = w.clone()
    w.fill_diagonal_(0.0)
    w = w / (2 * w.sum(dim=1, keepdim=True).clamp_min(1e-300))
    w.fill_diagonal_(0.5)
    return w


def _sparse_kernel(w: Tensor, k: int) -> Tensor:
    """Each row keeps its k + 1 largest entries (itself included), renormalised (SNF's S)."""
    idx = w.topk(k + 1, dim=1).indices
    s = torch.zeros_like(w).scatter_(1, idx, w.gather(1, idx))
    return s / s.sum(dim=1, keepdim=True).clamp_min(1e-300)


def similarity_network_fusion(
    grams: Sequence[Tensor], weights: Sequence[float], k: int, iterations: int = 10
) -> Tensor:
    """Fuse several Grams of the same anchors by similarity network fusion (Wang et al., 2014),
    with modality weights.

    Each Gram becomes a locally scaled affinity; every modality's kernel is then repeatedly
    diffused through the weighted mean of the others along its own k-nearest-neighbour graph,
    P_i <- S_i (sum_{j != i} w_j P_j / sum_{j != i} w_j) S_i^T, so that a relation one modality
    holds weakly but the others hold strongly is reinforced, and noise one modality alone holds
    fades. The fused sum_i w_i P_i / sum_i w_i has its diagonal set to the mean row maximum and
    is returned centred and normalised like `anchor_gram`. Uses nothing but the Grams.
    grams: M >= 1 symmetric N x N; weights: M non-negative with a positive sum; 1 <= k < N.
    """
    if not grams or len(grams) != len(weights):
        raise ValueError(
            f"need one weight per Gram, got {len(grams)} Grams, {len(weights)} weights"
        )
    n = grams[0].shape[0]
    for i, g in enumerate(grams):
        check_gram(g, f"gram {i}")
        if g.shape[0] != n:
            raise ValueError(f"gram {i} is {g.shape[0]} x {g.shape[0]}, expected {n} x {n}")
    w = [float(x) for x in weights]
    if any(not x >= 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w}")
    if not 1 <= k < n:
        raise ValueError(f"need 1 <= k < N, got k={k}, N={n}")
    if iterations < 0:
        raise ValueError("iterations must be >= 0")
    affinities = [_affinity(g.double(), k) for g in grams]
    kernels = [_status_matrix(a) for a in affinities]
    sparse = [_sparse_kernel(a, k) for a in affinities]
    m = len(kernels)
    for _ in range(iterations if m > 1 else 0):
        new = []
        for i in range(m):
            total = sum(w[j] for j in range(m) if j != i)
            if total <= 0:  # every other modality has weight 0: nothing to diffuse through
                new.append(kernels[i])
                continue
            others = sum(w[j] * kernels[j] for j in range(m) if j != i) / total
            p = sparse[i] @ others @ sparse[i].T
            new.append(_status_matrix(0.5 * (p + p.T)))
        kernels = new
    fused = sum(wi * p for wi, p in zip(w, kernels, strict=True)) / sum(w)
    assert isinstance(fused, Tensor)
    fused = 0.5 * (fused + fused.T)
    fused.fill_diagonal_(0.0)
    fused.fill_diagonal_(float(fused.max(dim=1).values.mean()))
    out = normalise_gram(center_gram(fused))
    return (0.5 * (out + out.T)).to(grams[0].dtype)
