"""The homogeneous transformer (METHOD.md section 2): architecture only.

    x (modality m) -> T_m -> tokens (B, L, d) + modality embedding + positions -> LayerNorm
                   -> shared encoder G (frozen W0, adapters attached later) -> mean pool -> z (B, d)

The backbone's block layout and names follow BERT so pretrained MiniLM weights load one to one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.adapters import FrozenLinear
from common.config import BackboneConfig, ModelConfig
from common.tokenizers import INPUT_KEYS, make_tokenizer, seeded_generator


class SelfAttention(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.q = FrozenLinear(cfg.dim, cfg.dim)
        self.k = FrozenLinear(cfg.dim, cfg.dim)
        self.v = FrozenLinear(cfg.dim, cfg.dim)
        self.o = FrozenLinear(cfg.dim, cfg.dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:  # (B, L, d) -> (B, L, d)
        b, n, d = x.shape

        def split(t: Tensor) -> Tensor:  # (B, L, d) -> (B, heads, L, d / heads)
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        attn_mask = None if mask is None else mask[:, None, None, :]  # True = attend
        y = F.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=attn_mask
        )
        return self.o(y.transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    """Post-LayerNorm BERT block: LN(x + Attn(x)), then LN(h + MLP(h))."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.attn_norm = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps)
        self.mlp_in = FrozenLinear(cfg.dim, cfg.mlp_dim)
        self.mlp_out = FrozenLinear(cfg.mlp_dim, cfg.dim)
        self.mlp_norm = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        h = self.attn_norm(x + self.attn(x, mask))
        return self.mlp_norm(h + self.mlp_out(F.gelu(self.mlp_in(h))))


class Backbone(nn.Module):
    """The shared encoder G and its frozen embedding tables; every parameter here is frozen
    (adapters attached by common.adapters add the only trainable ones)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.dim)
        self.token_type = nn.Parameter(torch.zeros(cfg.dim))  # BERT's segment-0 vector
        self.embed_norm = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.layers))
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, tokens: Tensor, mask: Tensor | None) -> Tensor:  # (B, L, d) -> (B, L, d)
        positions = self.position_embeddings.weight[: tokens.shape[1]]
        h = self.embed_norm(tokens + positions + self.token_type)
        for block in self.layers:
            h = block(h, mask)
        return h


@torch.no_grad()
def init_frozen(backbone: Backbone, gen: torch.Generator) -> None:
    """Random-initialise the frozen weights from a seeded generator, so that every party builds
    the same random backbone (pretrained weights, when configured, replace these)."""
    for name, p in backbone.named_parameters():
        if name.endswith("bias") or name == "token_type":
            p.zero_()
        elif "norm" in name:
            p.fill_(1.0)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


class HomogeneousTransformer(nn.Module):
    """Tokenizers for cfg.modalities around ONE shared backbone; forward returns z (B, d)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = Backbone(cfg.backbone)
        if cfg.backbone.pretrained is None:  # pretrained weights replace every frozen tensor
            init_frozen(self.backbone, seeded_generator(cfg.seed, "backbone"))
        self.tokenizers = nn.ModuleDict({m: make_tokenizer(m, cfg) for m in cfg.modalities})

    def tokenize(self, modality: str, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """Tokens (B, L, d) with the modality embedding added, and a (B, L) bool mask or None."""
        if modality not in self.tokenizers:
            raise ValueError(
                f"this model has no {modality!r} tokenizer (has {list(self.tokenizers)})"
            )
        missing = [k for k in INPUT_KEYS[modality] if k not in batch]
        if missing:
            raise ValueError(f"{modality} batch lacks {missing}")
        tok = self.tokenizers[modality]
        mask = None
        if modality == "text":
            ids = batch["input_ids"]
            tokens = tok(self.backbone.word_embeddings(ids))
            mask = batch["attention_mask"].bool()
        else:
            tokens = tok(batch[INPUT_KEYS[modality][0]])
        return tokens + tok.modality_embedding, mask

    def forward(self, modality: str, batch: Mapping[str, Tensor]) -> Tensor:  # -> (B, d)
        tokens, mask = self.tokenize(modality, batch)
        h = self.backbone(tokens, mask)
        if mask is None:
            return h.mean(dim=1)
        weights = mask.unsqueeze(-1).to(h.dtype)
        return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)
