"""Samples read from disk -> the model's input tensors (common/tokenizers.py documents them)."""

from __future__ import annotations

import torch
from torch import Tensor

from common.config import ModelConfig
from common.dataformat import Samples
from common.pretrained import WordPieceTokenizer


def to_model_inputs(
    samples: Samples, cfg: ModelConfig, tokenizer: WordPieceTokenizer | None = None
) -> dict[str, Tensor]:
    """Convert one modality's samples to model inputs; ValueError naming the mismatch otherwise.

    image: uint8 -> float in [0, 1]; audio: int16 -> float in [-1, 1), sample rate must match the
    model's; text: WordPiece ids and mask (tokenizer built on demand); sensor: as stored.
    """
    tk = cfg.tokenizers
    if samples.modality == "image":
        pixels = samples.arrays["pixels"]
        if pixels.shape[1] != tk.image_channels:
            raise ValueError(
                f"images have {pixels.shape[1]} channel(s), the model expects {tk.image_channels}"
            )
        return {"pixels": pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels}
    if samples.modality == "audio":
        if samples.sample_rate != tk.audio_sample_rate:
            raise ValueError(
                f"audio is at {samples.sample_rate} Hz, the model expects {tk.audio_sample_rate} Hz"
            )
        wave = samples.arrays["waveform"]
        return {"waveform": wave.float() / 32768.0 if not wave.dtype.is_floating_point else wave}
    if samples.modality == "text":
        tok = tokenizer or WordPieceTokenizer(tk.text_max_tokens)
        return tok(samples.texts)
    signal = samples.arrays["signal"]
    if signal.shape[1] != tk.sensor_channels:
        raise ValueError(
            f"signals have {signal.shape[1]} channel(s), the model expects {tk.sensor_channels}"
        )
    return {"signal": signal}
