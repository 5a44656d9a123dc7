"""Evaluation metrics of BENCHMARK.md: cross-modal retrieval, anchor-relative coordinates, probes.

Pure functions on tensors; labels are evaluation-only and never reach a node or coordinator.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def anchor_relative(z: Tensor, anchors: Tensor) -> Tensor:
    """r(x) = [cos(zhat(x), zhat(a_j))]_j, centred per row: (n, d), (N, d) -> (n, N).

    Both arguments are embeddings of ONE modality (its samples and its own anchor instances);
    the result lives in the same N anchor coordinates for every modality. Centring each row
    removes a modality-wide offset of cosine levels.
    """
    r = F.normalize(z.double(), dim=1) @ F.normalize(anchors.double(), dim=1).T
    return (r - r.mean(dim=1, keepdim=True)).float()


def retrieval(
    query: Tensor, query_labels: Tensor, gallery: Tensor, gallery_labels: Tensor
) -> dict[str, float]:
    """Cosine retrieval of every query against the whole gallery; relevant = same label.

    Returns mAP (mean over queries of average precision over the whole ranked gallery),
    R@1 (top hit relevant) and P@10 (precision of the top 10).
    """
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query dim {query.shape[1]} != gallery dim {gallery.shape[1]}")
    sims = F.normalize(query.double(), dim=1) @ F.normalize(gallery.double(), dim=1).T
    order = sims.argsort(dim=1, descending=True)
    relevant = (gallery_labels[order] == query_labels[:, None]).double()  # (q, g) in rank order
    hits = relevant.cumsum(dim=1)
    ranks = torch.arange(1, relevant.shape[1] + 1, dtype=torch.float64)
    n_rel = relevant.sum(dim=1).clamp_min(1.0)
    ap = ((hits / ranks) * relevant).sum(dim=1) / n_rel
    k = min(10, relevant.shape[1])
    return {
        "map": float(ap.mean()),
        "r1": float(relevant[:, 0].mean()),
        "p10": float(relevant[:, :k].mean()),
    }


def chance_map(query_labels: Tensor, gallery_labels: Tensor) -> float:
    """Expected mAP of a random ranking: about the fraction of relevant items per query."""
    counts = torch.bincount(gallery_labels, minlength=int(query_labels.max()) + 1).double()
    return float((counts[query_labels] / len(gallery_labels)).mean())


def linear_probe(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seed: int = 0
) -> float:
    """Accuracy of a logistic-regression probe on standardised embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x.double().numpy())
    clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    clf.fit(scaler.transform(train_x.double().numpy()), train_y.numpy())
    pred = clf.predict(scaler.transform(test_x.double().numpy()))
    return float(np.mean(pred == test_y.numpy()))


def concept_gram(labels: Tensor) -> Tensor:
    """The ideal concept Gram of a labelled anchor set (same class = 1), centred and normalised.
    Evaluation only: tells how close a consensus target is to the true concept structure."""
    from common.alignment import center_gram, normalise_gram

    same = (labels[:, None] == labels[None, :]).double()
    return normalise_gram(center_gram(same))
