"""Training-free baselines on fixed per-modality features (BENCHMARK.md: must be beaten widely).

Fixed features: image pixels (28 x 28), audio log-mel statistics (per-band mean and std plus
8-step temporal pooling), text the frozen pretrained MiniLM sentence embedding, sensor the raw
signal; each standardised with the statistics of that modality's private data.

- anchors_only: a ridge map from modality A's features to B's, fitted on the anchor tuples;
  queries are mapped into B's feature space. The best of four ridge strengths is reported
  (optimistic for the baseline: the choice looks at test mAP).
- anchor_relative_fixed: anchor-relative coordinates of the fixed features, no training.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common.config import ModelConfig
from common.pretrained import build_model
from common.tokenizers import AudioTokenizer, fit_length
from rosetta.metrics import anchor_relative, chance_map, retrieval
from rosetta.simulate import Federation

RIDGE_STRENGTHS = (1.0, 10.0, 100.0, 1000.0)


class FixedFeatures:
    """Per-modality fixed feature maps (nothing trained)."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self._audio = AudioTokenizer(cfg.tokenizers, 8, torch.Generator().manual_seed(0))
        self._text = None

    @torch.no_grad()
    def __call__(self, modality: str, inputs: Mapping[str, Tensor]) -> Tensor:
        if modality == "image":
            x = inputs["pixels"]
            if x.shape[-2:] != (28, 28):
                x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
            return x.flatten(1).double()
        if modality == "audio":
            mel = torch.cat([self._audio.log_mel(w) for w in inputs["waveform"].split(256)])
            pooled = F.adaptive_avg_pool1d(mel.transpose(1, 2), 8).flatten(1)
            return torch.cat([mel.mean(1), mel.std(1), pooled], dim=1).double()
        if modality == "sensor":
            return (
                fit_length(inputs["signal"], self.cfg.tokenizers.sensor_length).flatten(1).double()
            )
        if self._text is None:
            self._text = build_model(
                ModelConfig(device="cpu").with_modalities("text"), adapters=False
            )
        parts = [
            self._text("text", {k: v[i : i + 256] for k, v in inputs.items()})
            for i in range(0, inputs["input_ids"].shape[0], 256)
        ]
        return torch.cat(parts).double()


def _ridge(x: Tensor, y: Tensor, strength: float) -> Tensor:
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    eye = torch.eye(x1.shape[1], dtype=x.dtype)
    return torch.linalg.solve(x1.T @ x1 + strength * eye, x1.T @ y)


def _apply(w: Tensor, x: Tensor) -> Tensor:
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) @ w


def _summary(
    pairs: dict[str, dict[str, float]], chance: float, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "pairs": pairs,
        "mean_map": float(np.mean([p["map"] for p in pairs.values()])),
        "mean_r1": float(np.mean([p["r1"] for p in pairs.values()])),
        "mean_p10": float(np.mean([p["p10"] for p in pairs.values()])),
        "chance_map": chance,
        **extra,
    }


def fixed_baselines(fed: Federation, cfg: ModelConfig) -> dict[str, dict[str, Any]]:
    """{"anchors_only": ..., "anchor_relative_fixed": ...} on the federation's test sets."""
    feats = FixedFeatures(cfg)
    mods = sorted(fed.eval_sets)
    stats = {}
    for m in mods:
        private = torch.cat([feats(m, n.trainer.data) for n in fed.nodes if n.modality == m])
        stats[m] = (private.mean(0), private.std(0) + 1e-6)

    def std(m: str, x: Tensor) -> Tensor:
        return (x - stats[m][0]) / stats[m][1]

    test = {m: std(m, feats(m, fed.eval_sets[m].test)) for m in mods}
    anchors = {m: std(m, feats(m, fed.eval_sets[m].anchors)) for m in mods}
    labels = {m: fed.eval_sets[m].test_labels for m in mods}
    ordered = list(itertools.permutations(mods, 2))
    chance = float(np.mean([chance_map(labels[a], labels[b]) for a, b in ordered]))
    rel = {m: anchor_relative(test[m], anchors[m]) for m in mods}
    relative = {f"{a}->{b}": retrieval(rel[a], labels[a], rel[b], labels[b]) for a, b in ordered}
    best: dict[str, Any] | None = None
    for strength in RIDGE_STRENGTHS:
        pairs = {}
        for a, b in ordered:
            w = _ridge(anchors[a], anchors[b], strength)
            pairs[f"{a}->{b}"] = retrieval(_apply(w, test[a]), labels[a], test[b], labels[b])
        run = _summary(pairs, chance, {"ridge_strength": strength})
        if best is None or run["mean_map"] > best["mean_map"]:
            best = run
    assert best is not None
    return {"anchors_only": best, "anchor_relative_fixed": _summary(relative, chance, {})}
