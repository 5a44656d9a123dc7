"""Checks every upload passes before it counts (a failed check discards it; the round goes on).

Plain functions on the reassembled payload: the servicer maps `UploadRejectedError` to
INVALID_ARGUMENT with the public message, and counts the rejection by its reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from common.partition import modality_of


class UploadRejectedError(ValueError):
    """An upload that must not count; `reason` is a short label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class UploadLimits:
    max_delta_norm: float = 10.0  # L2 norm of all delta values together
    symmetry_tolerance: float = 1e-4


def validate_upload(
    *,
    node: str,
    modality: str,
    round_id: int,
    current_round: int,
    delta: Mapping[str, Tensor],
    precisions: Mapping[str, Tensor],
    gram: Tensor,
    node_precision: float,
    sample_count: int,
    layout: Mapping[str, tuple[int, ...]],
    n_anchors: int,
    limits: UploadLimits = UploadLimits(),
) -> None:
    """Raise UploadRejectedError unless the upload fits the round, the model layout and the limits.

    layout: the global shared state's shapes by name (every modality's tokenizer included);
    a node must send exactly the backbone names plus its own modality's tokenizer names.
    """
    if round_id != current_round:
        raise UploadRejectedError(
            "wrong_round", f"upload is for round {round_id}, the current round is {current_round}"
        )
    expected = {k for k in layout if modality_of(k) in (None, modality)}
    missing, extra = sorted(expected - set(delta)), sorted(set(delta) - expected)
    if missing or extra:
        raise UploadRejectedError(
            "wrong_names",
            f"delta names do not match the {modality} layout: missing {missing[:3]}, unexpected {extra[:3]}",
        )
    for name, t in delta.items():
        if tuple(t.shape) != tuple(layout[name]):
            raise UploadRejectedError(
                "wrong_shape",
                f"delta {name!r} has shape {tuple(t.shape)}, expected {tuple(layout[name])}",
            )
        if not bool(torch.isfinite(t).all()):
            raise UploadRejectedError("non_finite", f"delta {name!r} has NaN or Inf values")
    norm = math.sqrt(sum(float(t.double().square().sum()) for t in delta.values()))
    if norm > limits.max_delta_norm:
        raise UploadRejectedError(
            "delta_norm", f"delta norm {norm:.3g} exceeds the cap {limits.max_delta_norm:g}"
        )
    if set(precisions) != set(delta):
        raise UploadRejectedError("wrong_names", "precisions must name exactly the delta's tensors")
    for name, p in precisions.items():
        if p.numel() != 1 and tuple(p.shape) != tuple(layout[name]):
            raise UploadRejectedError(
                "wrong_shape", f"precision of {name!r} must be a scalar or match the delta's shape"
            )
        if not bool(torch.isfinite(p).all()) or bool((p <= 0).any()):
            raise UploadRejectedError(
                "bad_precision", f"precision of {name!r} must be positive and finite"
            )
    if not (math.isfinite(node_precision) and node_precision > 0):
        raise UploadRejectedError("bad_precision", "node precision must be positive and finite")
    if sample_count <= 0:
        raise UploadRejectedError("bad_scalar", "sample count must be positive")
    if tuple(gram.shape) != (n_anchors, n_anchors):
        raise UploadRejectedError(
            "wrong_shape", f"Gram is {tuple(gram.shape)}, expected {n_anchors} x {n_anchors}"
        )
    if not bool(torch.isfinite(gram).all()):
        raise UploadRejectedError("non_finite", "Gram has NaN or Inf values")
    if float((gram - gram.T).abs().max()) > limits.symmetry_tolerance:
        raise UploadRejectedError("gram_not_symmetric", "Gram is not symmetric")
