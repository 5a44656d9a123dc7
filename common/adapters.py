"""The subspace-stable magnitude/direction adapter of METHOD.md section 3, and how it is attached.

    W' = diag(m) * V / rownorm(V),    V = W0 + s * B A

A (r x d_in) is frozen and rebuilt by every party from (seed, layer name) via shared_basis;
B (d_out x r) is trained from zero and travels as a delta; m (d_out) is local and never sent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.config import AdapterConfig
from common.subspace import shared_basis


class FrozenLinear(nn.Module):
    """y = x W0^T + b with W0 and b frozen: the base layer before adapters are attached."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(d_out), requires_grad=False)
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:  # (..., d_in) -> (..., d_out)
        return F.linear(x, self.weight, self.bias)


class AdaptedLinear(nn.Module):
    """A FrozenLinear with the shared-subspace adapter; outputs equal the base layer's at init.

    Exactness at init: B = 0 makes V == W0 bit for bit, and m is initialised with the same
    rownorm computation the forward pass applies to V, so m / rownorm(V) == 1.0 exactly.
    """

    def __init__(self, base: FrozenLinear, basis: Tensor, cfg: AdapterConfig) -> None:
        super().__init__()
        d_out, d_in = base.weight.shape
        if basis.shape != (cfg.rank, d_in):
            raise ValueError(f"basis shape {tuple(basis.shape)} != {(cfg.rank, d_in)}")
        self.weight = base.weight  # W0, frozen
        self.bias = base.bias  # frozen
        self.scale = cfg.scale
        self.lora_a = nn.Parameter(basis.to(base.weight), requires_grad=cfg.train_a)
        self.lora_b = nn.Parameter(torch.zeros(d_out, cfg.rank, dtype=base.weight.dtype))
        self.magnitude: nn.Parameter | None = None
        if cfg.magnitude:
            self.magnitude = nn.Parameter(self._rownorm(self.weight.detach()).clone())

    @staticmethod
    def _rownorm(v: Tensor) -> Tensor:
        return torch.linalg.vector_norm(v, dim=1)

    def merged_weight(self) -> Tensor:
        """W' (d_out x d_in)."""
        v = self.weight + self.scale * (self.lora_b @ self.lora_a)
        if self.magnitude is None:
            return v
        return v * (self.magnitude / self._rownorm(v)).unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:  # (..., d_in) -> (..., d_out)
        return F.linear(x, self.merged_weight(), self.bias)


def attach_adapters(model: nn.Module, cfg: AdapterConfig, seed: int) -> list[str]:
    """Replace every FrozenLinear whose short name is in cfg.targets by an AdaptedLinear.

    Each layer's basis is shared_basis(seed, full module name, rank, d_in), so every party
    derives the same A. Returns the adapted module names, in module order.
    """
    adapted = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, FrozenLinear) or name.rsplit(".", 1)[-1] not in cfg.targets:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        basis = shared_basis(seed, name, cfg.rank, module.weight.shape[1])
        setattr(parent, child, AdaptedLinear(module, basis, cfg))
        adapted.append(name)
    if not adapted:
        raise ValueError(f"no layer matched adapter targets {cfg.targets}")
    return adapted
