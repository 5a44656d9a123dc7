"""Input tokenizers T_m: raw image, audio, text and sensor inputs -> L x d tokens (METHOD.md 2).

Inputs, per modality (a batch is a mapping of named tensors):
    image:  pixels          (B, C, H, W) float in [0, 1]; resized to image_size if different
    audio:  waveform        (B, S) float mono at audio_sample_rate; cropped/padded to audio_samples
    text:   input_ids       (B, L) int64 word pieces; attention_mask (B, L) 1 = real token
    sensor: signal          (B, C, T) float; cropped/padded to sensor_length
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.config import ModelConfig, TokenizerConfig

INPUT_KEYS = {
    "image": ("pixels",),
    "audio": ("waveform",),
    "text": ("input_ids", "attention_mask"),
    "sensor": ("signal",),
}


def seeded_generator(seed: int, name: str) -> torch.Generator:
    """A torch Generator seeded from (federation seed, name), the same in every process."""
    digest = hashlib.sha256(f"rosetta.init.v1|{seed}|{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _init_linear(layer: nn.Linear, gen: torch.Generator) -> None:
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=gen) * 2 * bound - bound)
        layer.bias.zero_()


def fit_length(x: Tensor, length: int) -> Tensor:
    """Centre-crop or symmetrically zero-pad the last dimension to `length`."""
    n = x.shape[-1]
    if n > length:
        start = (n - length) // 2
        return x[..., start : start + length]
    if n < length:
        left = (length - n) // 2
        return F.pad(x, (left, length - n - left))
    return x


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> Tensor:
    """HTK-scale triangular mel filters: (n_fft // 2 + 1) x n_mels."""

    def hz_to_mel(f: Tensor) -> Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def mel_to_hz(m: Tensor) -> Tensor:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(
        0.0, float(hz_to_mel(torch.tensor(sample_rate / 2.0))), n_mels + 2, dtype=torch.float64
    )
    edges = mel_to_hz(mels)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lower) / (centre - lower)
    down = (upper - freqs[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


class _Tokenizer(nn.Module):
    """Common part: a trainable projection to d and a trainable modality embedding."""

    def __init__(self, d_in: int, dim: int, gen: torch.Generator) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, dim)
        _init_linear(self.proj, gen)
        self.modality_embedding = nn.Parameter(torch.zeros(dim))


class ImageTokenizer(_Tokenizer):
    """Non-overlapping p x p patches -> linear map; L = (size / p)^2."""

    def __init__(self, cfg: TokenizerConfig, dim: int, gen: torch.Generator) -> None:
        super().__init__(cfg.image_channels * cfg.image_patch**2, dim, gen)
        self.size, self.patch, self.channels = cfg.image_size, cfg.image_patch, cfg.image_channels

    def forward(self, pixels: Tensor) -> Tensor:  # (B, C, H, W) -> (B, L, d)
        if pixels.dim() != 4 or pixels.shape[1] != self.channels:
            raise ValueError(
                f"image pixels must be (B, {self.channels}, H, W), got {tuple(pixels.shape)}"
            )
        if pixels.shape[-2:] != (self.size, self.size):
            pixels = F.interpolate(
                pixels, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
        patches = F.unfold(pixels, kernel_size=self.patch, stride=self.patch)  # (B, C p p, L)
        return self.proj(patches.transpose(1, 2))


class AudioTokenizer(_Tokenizer):
    """Waveform -> log-mel frames (fixed, not trained), per-clip standardised, grouped -> linear."""

    window: Tensor
    filters: Tensor

    def __init__(self, cfg: TokenizerConfig, dim: int, gen: torch.Generator) -> None:
        super().__init__(cfg.audio_n_mels * cfg.audio_frames_per_token, dim, gen)
        self.samples, self.n_fft, self.hop = cfg.audio_samples, cfg.audio_n_fft, cfg.audio_hop
        self.group = cfg.audio_frames_per_token
        self.register_buffer("window", torch.hann_window(cfg.audio_n_fft), persistent=False)
        fb = mel_filterbank(cfg.audio_n_mels, cfg.audio_n_fft, cfg.audio_sample_rate)
        self.register_buffer("filters", fb, persistent=False)

    def log_mel(self, waveform: Tensor) -> Tensor:  # (B, S) -> (B, frames, n_mels)
        spec = torch.stft(
            fit_length(waveform, self.samples),
            self.n_fft,
            self.hop,
            window=self.window,
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # (B, n_freqs, frames)
        mel = torch.log(power.transpose(1, 2) @ self.filters + 1e-6)
        mu = mel.mean(dim=(1, 2), keepdim=True)
        sigma = mel.std(dim=(1, 2), keepdim=True).clamp_min(1e-3)
        return (mel - mu) / sigma

    def forward(self, waveform: Tensor) -> Tensor:  # (B, S) -> (B, L, d)
        if waveform.dim() != 2:
            raise ValueError(f"audio waveform must be (B, samples), got {tuple(waveform.shape)}")
        mel = self.log_mel(waveform)
        b, frames, n_mels = mel.shape
        tokens = frames // self.group
        grouped = mel[:, : tokens * self.group].reshape(b, tokens, self.group * n_mels)
        return self.proj(grouped)


class TextTokenizer(_Tokenizer):
    """Word pieces through the backbone's frozen pretrained embedding, then a trainable d x d map
    initialised to the identity (so the text path starts as the pretrained sentence encoder)."""

    def __init__(self, dim: int, gen: torch.Generator) -> None:
        super().__init__(dim, dim, gen)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(dim))

    def forward(self, word_vectors: Tensor) -> Tensor:  # (B, L, d) -> (B, L, d)
        return self.proj(word_vectors)


class SensorTokenizer(_Tokenizer):
    """Sliding windows (window w, stride s) over a C-channel series -> linear map."""

    def __init__(self, cfg: TokenizerConfig, dim: int, gen: torch.Generator) -> None:
        super().__init__(cfg.sensor_channels * cfg.sensor_window, dim, gen)
        self.length, self.window, self.stride = (
            cfg.sensor_length,
            cfg.sensor_window,
            cfg.sensor_stride,
        )
        self.channels = cfg.sensor_channels

    def forward(self, signal: Tensor) -> Tensor:  # (B, C, T) -> (B, L, d)
        if signal.dim() != 3 or signal.shape[1] != self.channels:
            raise ValueError(
                f"sensor signal must be (B, {self.channels}, T), got {tuple(signal.shape)}"
            )
        windows = fit_length(signal, self.length).unfold(2, self.window, self.stride)  # (B,C,L,w)
        b, c, n, w = windows.shape
        return self.proj(windows.permute(0, 2, 1, 3).reshape(b, n, c * w))


def make_tokenizer(modality: str, cfg: ModelConfig) -> _Tokenizer:
    """The tokenizer of one modality, initialised from (cfg.seed, modality) only."""
    gen = seeded_generator(cfg.seed, f"tokenizers.{modality}")
    dim, tk = cfg.backbone.dim, cfg.tokenizers
    if modality == "image":
        return ImageTokenizer(tk, dim, gen)
    if modality == "audio":
        return AudioTokenizer(tk, dim, gen)
    if modality == "text":
        return TextTokenizer(dim, gen)
    if modality == "sensor":
        return SensorTokenizer(tk, dim, gen)
    raise ValueError(f"unknown modality {modality!r}")
