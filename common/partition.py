"""The split of a model's parameters into shared (travel as deltas), local (never sent), frozen.

    shared: adapter B factors (and A in the trained-A ablation), the modality tokenizers
            (projection + modality embedding); aggregated among nodes (tokenizers only within
            their modality)
    local:  adapter magnitudes m; a site's own, never sent
    frozen: everything else (W0, biases, LayerNorms, embedding tables)

Roles are decided by name and module type, not by requires_grad, so a test can check that
requires_grad agrees with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from common.adapters import AdaptedLinear
from common.checks import check_finite

TOKENIZER_PREFIX = "tokenizers."
BACKBONE_PREFIX = "backbone."


def _adapter_roles(model: nn.Module) -> tuple[list[str], list[str]]:
    shared, local = [], []
    for name, module in model.named_modules():
        if isinstance(module, AdaptedLinear):
            shared.append(f"{name}.lora_b")
            if module.lora_a.requires_grad:
                shared.append(f"{name}.lora_a")
            if module.magnitude is not None:
                local.append(f"{name}.magnitude")
    return shared, local


def shared_names(model: nn.Module) -> list[str]:
    """Names of the shared parameters, sorted."""
    adapters, _ = _adapter_roles(model)
    tokenizers = [n for n, _ in model.named_parameters() if n.startswith(TOKENIZER_PREFIX)]
    return sorted(adapters + tokenizers)


def local_names(model: nn.Module) -> list[str]:
    """Names of the local parameters (magnitudes), sorted."""
    return sorted(_adapter_roles(model)[1])


def frozen_names(model: nn.Module) -> list[str]:
    """Every other parameter, sorted."""
    taken = set(shared_names(model)) | set(local_names(model))
    return sorted(n for n, _ in model.named_parameters() if n not in taken)


def modality_of(name: str) -> str | None:
    """The modality a shared parameter belongs to (tokenizers), or None for the backbone."""
    if name.startswith(TOKENIZER_PREFIX):
        return name[len(TOKENIZER_PREFIX) :].split(".", 1)[0]
    return None


def _extract(model: nn.Module, names: Iterable[str]) -> dict[str, Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for n in names}


def shared_state(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of the shared parameters."""
    return _extract(model, shared_names(model))


def local_state(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of the local parameters (magnitudes)."""
    return _extract(model, local_names(model))


def _load(model: nn.Module, state: Mapping[str, Tensor], names: list[str], what: str) -> None:
    expected = set(names)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{what} state does not match the model: missing {missing[:3]}"
            f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
            f"{'...' if len(unexpected) > 3 else ''}"
        )
    params = dict(model.named_parameters())
    for name in names:
        value = state[name]
        if tuple(value.shape) != tuple(params[name].shape):
            raise ValueError(
                f"{what} tensor {name!r} has shape {tuple(value.shape)}, "
                f"model expects {tuple(params[name].shape)}"
            )
        check_finite(value, f"{what} tensor {name!r}")
    with torch.no_grad():
        for name in names:
            params[name].copy_(state[name])


def load_shared_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load shared parameters strictly: exactly the model's shared names, right shapes, finite.
    Nothing is changed unless every tensor is valid."""
    _load(model, state, shared_names(model), "shared")


def load_local_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load local parameters (magnitudes) strictly, like load_shared_state."""
    _load(model, state, local_names(model), "local")


def subtract(after: Mapping[str, Tensor], before: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """after - before per name (the round's delta); the key sets must match."""
    if set(after) != set(before):
        raise ValueError(f"states differ in keys: {sorted(set(after) ^ set(before))[:5]}")
    return {n: after[n] - before[n] for n in after}


def modality_view(state: Mapping[str, Tensor], modality: str) -> dict[str, Tensor]:
    """The part of a global shared state a node of `modality` uses: backbone + its tokenizer."""
    return {k: v for k, v in state.items() if modality_of(k) in (None, modality)}
