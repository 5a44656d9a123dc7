"""Frozen, validated configuration of the model and its adapters (loaded from TOML tables)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

MODALITIES = ("image", "audio", "text", "sensor")
ADAPTER_TARGETS = ("q", "k", "v", "o", "mlp_in", "mlp_out")
PRETRAINED_BACKBONES = ("all-minilm-l6-v2",)


@dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    """The shared transformer encoder G (BERT-style, post-LayerNorm)."""

    dim: int = 384
    layers: int = 6
    heads: int = 12
    mlp_dim: int = 1536
    max_positions: int = 512
    vocab_size: int = 30522
    layer_norm_eps: float = 1e-12
    # Name of the packaged pretrained weights to load; None (or "none" in TOML) = random init.
    pretrained: str | None = "all-minilm-l6-v2"

    def __post_init__(self) -> None:
        if self.pretrained == "none":
            object.__setattr__(self, "pretrained", None)
        for name in ("dim", "layers", "heads", "mlp_dim", "max_positions", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"backbone.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"backbone.dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.pretrained is not None and self.pretrained not in PRETRAINED_BACKBONES:
            raise ValueError(
                f"backbone.pretrained must be one of {PRETRAINED_BACKBONES} or 'none', "
                f"got {self.pretrained!r}"
            )


@dataclass(frozen=True, kw_only=True)
class AdapterConfig:
    """Subspace-stable magnitude/direction adapters (METHOD.md section 3)."""

    rank: int = 8
    alpha: float = 16.0  # scale s = alpha / rank
    targets: tuple[str, ...] = ADAPTER_TARGETS
    magnitude: bool = True  # False: plain LoRA, no magnitude/direction decoupling (ablation)
    # A starts as the frozen shared basis and is trained and shared like B [choice, measured:
    # docs/BENCHMARKS.md, rosetta_frozen_a]; False keeps A frozen (BA then averages exactly).
    train_a: bool = True

    def __post_init__(self) -> None:
        if self.rank <= 0:
            raise ValueError(f"adapter.rank must be positive, got {self.rank}")
        if not self.alpha > 0:
            raise ValueError(f"adapter.alpha must be positive, got {self.alpha}")
        unknown = set(self.targets) - set(ADAPTER_TARGETS)
        if unknown or not self.targets:
            raise ValueError(
                f"adapter.targets must be a non-empty subset of {ADAPTER_TARGETS}, "
                f"got {self.targets}"
            )

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """Per-modality input tokenizers T_m: raw input -> L x d tokens."""

    image_size: int = 28  # images are resized to image_size x image_size
    image_patch: int = 7
    image_channels: int = 1
    audio_sample_rate: int = 16000
    audio_samples: int = 16000  # waveforms are centre-cropped or zero-padded to this length
    audio_n_fft: int = 400
    audio_hop: int = 160
    audio_n_mels: int = 40
    audio_frames_per_token: int = 4
    text_max_tokens: int = 32
    text_mask_id: int = 103  # [MASK] in the MiniLM vocabulary; used by text augmentation
    sensor_channels: int = 1
    sensor_length: int = 40
    # wide, overlapping windows: measured on MNIST-1D, windows of 24 beat 4, 8, 12 and 16
    sensor_window: int = 24
    sensor_stride: int = 2

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(
                    f"tokenizers.{f.name} must be positive, got {getattr(self, f.name)}"
                )
        if self.image_size % self.image_patch:
            raise ValueError(
                f"tokenizers.image_size ({self.image_size}) must be a multiple of "
                f"image_patch ({self.image_patch})"
            )
        if self.sensor_window > self.sensor_length:
            raise ValueError(
                f"tokenizers.sensor_window ({self.sensor_window}) must not exceed "
                f"sensor_length ({self.sensor_length})"
            )
        if self.audio_n_fft > self.audio_samples:
            raise ValueError("tokenizers.audio_n_fft must not exceed audio_samples")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.image_patch) ** 2

    @property
    def audio_frames(self) -> int:
        return self.audio_samples // self.audio_hop + 1  # torch.stft with center=True

    @property
    def audio_tokens(self) -> int:
        return self.audio_frames // self.audio_frames_per_token

    @property
    def sensor_tokens(self) -> int:
        return (self.sensor_length - self.sensor_window) // self.sensor_stride + 1

    def tokens(self, modality: str) -> int:
        """Sequence length L produced for a modality (text: its maximum)."""
        return {
            "image": self.image_tokens,
            "audio": self.audio_tokens,
            "text": self.text_max_tokens,
            "sensor": self.sensor_tokens,
        }[modality]


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The homogeneous transformer: tokenizers + modality embedding + shared backbone + adapters."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    tokenizers: TokenizerConfig = field(default_factory=TokenizerConfig)
    modalities: tuple[str, ...] = MODALITIES
    seed: int = 0  # the federation seed: shared bases A and initial tokenizer weights
    device: str = "auto"  # "auto": CUDA when available, else CPU

    def __post_init__(self) -> None:
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(
                f"modalities must be a non-empty subset of {MODALITIES}, got {self.modalities}"
            )
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities repeat: {self.modalities}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        longest = max(self.tokenizers.tokens(m) for m in self.modalities)
        if longest > self.backbone.max_positions:
            raise ValueError(
                f"a modality produces {longest} tokens, more than backbone.max_positions "
                f"({self.backbone.max_positions})"
            )
        if self.tokenizers.text_mask_id >= self.backbone.vocab_size:
            raise ValueError("tokenizers.text_mask_id must be < backbone.vocab_size")
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda")):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    @classmethod
    def tiny(cls, **overrides: Any) -> ModelConfig:
        """A small random-initialised config for CPU tests (the 'debug model')."""
        base = cls(
            backbone=BackboneConfig(
                dim=32,
                layers=2,
                heads=2,
                mlp_dim=64,
                max_positions=64,
                vocab_size=100,
                pretrained=None,
            ),
            adapter=AdapterConfig(rank=4, alpha=8.0),
            tokenizers=TokenizerConfig(
                image_size=8,
                image_patch=4,
                audio_samples=1600,
                audio_n_fft=128,
                audio_hop=64,
                audio_n_mels=16,
                text_max_tokens=12,
                text_mask_id=1,
                sensor_length=16,
                sensor_window=4,
            ),
            device="cpu",
        )
        return dataclasses.replace(base, **overrides)

    def with_modalities(self, *modalities: str) -> ModelConfig:
        return dataclasses.replace(self, modalities=tuple(modalities))


T = TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build a config dataclass from a TOML table; unknown keys are an error naming the key.

    Nested dataclass fields take sub-tables; tuple fields take arrays.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ValueError(f"unknown config key {path!r} (expected one of {sorted(fields)})")
        default = getattr(cls(), key) if _has_defaults(cls) else None
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            kwargs[key] = from_mapping(type(default), value, path)
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def _has_defaults(cls: type) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Local training in one round (METHOD.md 4): L_self + lambda (1 - CKA) [+ supervised]."""

    steps: int = 50  # optimiser steps per round
    batch_size: int = 64
    lr: float = 1e-3  # AdamW, shared parameters (B factors, tokenizers)
    magnitude_lr: float = 1e-3  # AdamW, local magnitudes
    weight_decay: float = 0.0
    temperature: float = 0.1  # InfoNCE
    cka_weight: float = 1.0  # lambda; the term is skipped without a target (round 1)
    anchors_per_step: int = 128  # random anchor subset per step for the CKA term; 0 = all
    supervised_weight: float = 0.0  # SupCon on private labels, only where a node has labels
    precision: str = "tensor"  # "tensor": one precision per tensor; "element": per parameter
    fisher_prior: float = 1e-8
    # Data-quality factor of the precisions (common/precision.py): the node's sample count is
    # scaled by anchor_coverage**coverage_power (0 = off), measured on up to coverage_samples
    # private samples at the end of each round.
    coverage_power: float = 4.0
    coverage_samples: int = 256
    embed_batch: int = 256  # batch size when embedding all anchors for the Gram
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "embed_batch", "coverage_samples"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("train.batch_size must be >= 2 (InfoNCE needs negatives)")
        for name in ("lr", "magnitude_lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
        for name in (
            "weight_decay",
            "cka_weight",
            "supervised_weight",
            "fisher_prior",
            "coverage_power",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.anchors_per_step < 0 or self.anchors_per_step == 1:
            raise ValueError("train.anchors_per_step must be 0 (all) or >= 2")
        if self.precision not in ("tensor", "element"):
            raise ValueError(
                f"train.precision must be 'tensor' or 'element', got {self.precision!r}"
            )
