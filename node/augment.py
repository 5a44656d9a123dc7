"""Per-modality augmentations that make the two views of self-supervised InfoNCE.

Each function takes a batch (mapping of named tensors, leading dim B) and a torch Generator,
and returns a new batch; inputs are never modified. Strengths are moderate by design: they
must keep the digit's identity while changing what a site's sensor or speaker would change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

Batch = Mapping[str, Tensor]


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float, like: Tensor) -> Tensor:
    return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(like.device, like.dtype)


def augment_image(batch: Batch, gen: torch.Generator) -> dict[str, Tensor]:
    """Random affine (rotation +-15 deg, scale 0.85-1.15, shift +-10%), contrast and noise."""
    x = batch["pixels"]
    b = x.shape[0]
    angle = _uniform(gen, b, -math.pi / 12, math.pi / 12, x)
    scale = _uniform(gen, b, 0.85, 1.15, x)
    shift = _uniform(gen, 2 * b, -0.1, 0.1, x).view(b, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    contrast = _uniform(gen, b, 0.7, 1.3, x).view(b, 1, 1, 1)
    noise = torch.randn(x.shape, generator=gen).to(x) * 0.05
    return {**batch, "pixels": (y * contrast + noise).clamp(0.0, 1.0)}


def augment_audio(batch: Batch, gen: torch.Generator) -> dict[str, Tensor]:
    """Speed 0.9-1.1 (resampling), time shift +-10%, gain +-6 dB, additive noise at 10-30 dB SNR."""
    x = batch["waveform"]
    b, s = x.shape
    speed = float(_uniform(gen, 1, 0.9, 1.1, x))
    y = F.interpolate(x[:, None], size=max(2, int(s / speed)), mode="linear", align_corners=False)[
        :, 0
    ]
    y = y[:, :s] if y.shape[1] >= s else F.pad(y, (0, s - y.shape[1]))
    shifts = (torch.rand(b, generator=gen) * 0.2 * s - 0.1 * s).long().tolist()
    y = torch.stack([torch.roll(y[i], int(k)) for i, k in enumerate(shifts)])
    gain = 10 ** (_uniform(gen, b, -6, 6, x) / 20).view(b, 1)
    power = y.square().mean(dim=1, keepdim=True).clamp_min(1e-10)
    snr_db = _uniform(gen, b, 10, 30, x).view(b, 1)
    noise = torch.randn(y.shape, generator=gen).to(x) * torch.sqrt(power / 10 ** (snr_db / 10))
    return {**batch, "waveform": (y + noise) * gain}


def augment_text(
    batch: Batch,
    gen: torch.Generator,
    mask_id: int = 103,
    p_mask: float = 0.15,
    p_drop: float = 0.1,
) -> dict[str, Tensor]:
    """Word-piece masking (p_mask) and deletion (p_drop) among real tokens; [CLS]/[SEP] kept."""
    ids, attn = batch["input_ids"], batch["attention_mask"]
    out_ids, out_mask = torch.zeros_like(ids), torch.zeros_like(attn)
    for i in range(ids.shape[0]):
        real = int(attn[i].sum())
        row = ids[i, :real].clone()
        inner = torch.arange(real)
        interior = (inner > 0) & (inner < real - 1)
        r = torch.rand(real, generator=gen)
        row[interior & (r < p_mask)] = mask_id
        keep = ~(interior & (r >= p_mask) & (r < p_mask + p_drop))
        if int(keep.sum()) < 3 and real >= 3:  # never drop a sentence to nothing
            keep = torch.ones(real, dtype=torch.bool)
        row = row[keep]
        out_ids[i, : row.numel()] = row
        out_mask[i, : row.numel()] = 1
    return {**batch, "input_ids": out_ids, "attention_mask": out_mask}


def augment_sensor(batch: Batch, gen: torch.Generator) -> dict[str, Tensor]:
    """Scale 0.8-1.2, time warp 0.9-1.1, shift +-10%, jitter at 5% of the series' spread."""
    x = batch["signal"]
    b, _, t = x.shape
    warp = float(_uniform(gen, 1, 0.9, 1.1, x))
    y = F.interpolate(x, size=max(2, int(t * warp)), mode="linear", align_corners=False)
    start = max(0, (y.shape[2] - t) // 2)
    y = y[:, :, start : start + t]
    y = F.pad(y, (0, t - y.shape[2]), mode="replicate") if y.shape[2] < t else y
    shifts = (torch.rand(b, generator=gen) * 0.2 * t - 0.1 * t).long().tolist()
    y = torch.stack([torch.roll(y[i], int(k), dims=-1) for i, k in enumerate(shifts)])
    scale = _uniform(gen, b, 0.8, 1.2, x).view(b, 1, 1)
    spread = x.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    noise = torch.randn(y.shape, generator=gen).to(x) * 0.05 * spread
    return {**batch, "signal": y * scale + noise}


AUGMENTERS: dict[str, Callable[[Batch, torch.Generator], dict[str, Tensor]]] = {
    "image": augment_image,
    "audio": augment_audio,
    "text": augment_text,
    "sensor": augment_sensor,
}
