"""The coordinator's round rule: fold node uploads into the new global state and consensus target.

One implementation, used by the in-process simulation and by the coordinator service. Memory
does not grow with the number of nodes: deltas and Grams are folded into running sums as they
arrive (one accumulator for the backbone, one per modality for tokenizers and Grams).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from common.aggregation import (
    PrecisionWeightedSum,
    consensus_gram,
    knn_denoise,
    similarity_network_fusion,
)
from common.alignment import center_gram, cka, normalise_gram
from common.checks import check_gram
from common.partition import modality_of

RULES = ("precision", "fedavg")
FUSIONS = ("mean", "snf")
CONSENSUS = ("equal", "precision", "agreement")


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    """How a round's uploads become the next global state and target."""

    rule: str = "precision"  # "precision": METHOD.md 5; "fedavg": sample-count FedAvg (baseline)
    # Modality weights omega_m of the consensus: "equal"; "precision" (sum of the modality's
    # node precisions, normalised over modalities); "agreement" (how well a modality's Gram
    # agrees with the other modalities' Grams, CKA)
    consensus: str = "agreement"
    agreement_power: float = 4.0  # omega_m ~ agreement^p: trust the most consistent modality most
    # k of the k-nearest-neighbour graphs both fusions use; k = round(sqrt(N)) when knn = 0.
    # knn < 0 turns graphs off: the target is the plain omega-weighted mean of the Grams.
    knn: int = 0
    # How the modalities' Grams become one target: "snf" (omega-weighted similarity network
    # fusion on kNN graphs; common.aggregation.similarity_network_fusion) or "mean" (the
    # omega-weighted mean blended with its kNN graph; common.aggregation.knn_denoise).
    fusion: str = "snf"
    target_smoothing: float = 0.25  # T_t = normalise(beta T_{t-1} + (1 - beta) T_round)
    # Scale each node's precisions and Gram weight by max(0, CKA(node Gram, previous target))^p:
    # a site whose geometry disagrees with the consensus (corrupted data) counts less. 0 = off.
    consistency_power: float = 0.0
    server_lr: float = 1.0  # global += server_lr * aggregated delta
    # Extra server step size for the backbone (the B factors every modality shares), on top of
    # server_lr. Averaging the backbone over M modalities' nodes moves it about 1/M as far as
    # M modalities training one model in turn would; backbone_lr = M restores that step.
    backbone_lr: float = 1.0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"strategy.rule must be one of {RULES}, got {self.rule!r}")
        if self.consensus not in CONSENSUS:
            raise ValueError(
                f"strategy.consensus must be one of {CONSENSUS}, got {self.consensus!r}"
            )
        if self.fusion not in FUSIONS:
            raise ValueError(f"strategy.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if not 0.0 <= self.target_smoothing < 1.0:
            raise ValueError(
                f"strategy.target_smoothing must be in [0, 1), got {self.target_smoothing}"
            )
        if not self.agreement_power > 0:
            raise ValueError(
                f"strategy.agreement_power must be positive, got {self.agreement_power}"
            )
        if not self.consistency_power >= 0:
            raise ValueError(
                f"strategy.consistency_power must be >= 0, got {self.consistency_power}"
            )
        for name in ("server_lr", "backbone_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"strategy.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class Upload:
    """What one node sent for one round (already validated by the transport layer)."""

    node: str
    modality: str
    delta: Mapping[str, Tensor]
    precisions: Mapping[str, Tensor]
    node_precision: float
    gram: Tensor
    n_samples: int


@dataclass
class RoundAggregate:
    """Running sums of one round; `finish` turns them into the next state and target."""

    cfg: StrategyConfig
    backbone: PrecisionWeightedSum = field(default_factory=PrecisionWeightedSum)
    tokenizers: dict[str, PrecisionWeightedSum] = field(default_factory=dict)
    grams: dict[str, tuple[Tensor, float, float]] = field(
        default_factory=dict
    )  # m -> (sum w K, sum w, sum pi)
    nodes: list[str] = field(default_factory=list)
    # The previous round's target: with consistency_power > 0 each node's weights are scaled
    # by max(0, CKA(its Gram, reference))^power (precision rule only).
    reference: Tensor | None = None
    consistency: dict[str, float] = field(default_factory=dict)

    def _consistency(self, up: Upload) -> float:
        if self.cfg.rule == "fedavg" or self.cfg.consistency_power == 0 or self.reference is None:
            return 1.0
        if self.reference.shape != up.gram.shape:
            raise ValueError(f"gram of {up.node!r} does not match the previous target's size")
        return (
            max(0.0, float(cka(up.gram.double(), self.reference.double())))
            ** self.cfg.consistency_power
        )

    def add(self, up: Upload) -> None:
        """Fold one upload in; ValueError (and nothing changed) if it does not fit the others."""
        if up.node in self.nodes:
            raise ValueError(f"node {up.node!r} already uploaded this round")
        check_gram(up.gram, f"gram of {up.node!r}")
        if self.grams:
            n = next(iter(self.grams.values()))[0].shape[0]
            if up.gram.shape[0] != n:
                raise ValueError(
                    f"gram of {up.node!r} is {up.gram.shape[0]} x {up.gram.shape[0]}, expected {n}"
                )
        if not (math.isfinite(up.node_precision) and up.node_precision >= 0):
            raise ValueError(f"node precision of {up.node!r} must be finite and >= 0")
        if up.n_samples <= 0:
            raise ValueError(f"sample count of {up.node!r} must be positive")
        foreign = [k for k in up.delta if modality_of(k) not in (None, up.modality)]
        if foreign:
            raise ValueError(
                f"{up.node!r} ({up.modality}) sent another modality's tokenizer: {foreign[:2]}"
            )
        trust = self._consistency(up)
        weight = {k: v * trust for k, v in self._weights(up).items()}
        backbone = {k: v for k, v in up.delta.items() if modality_of(k) is None}
        tokenizer = {k: v for k, v in up.delta.items() if modality_of(k) is not None}
        # Validate both parts before committing either, so a bad upload leaves no partial state.
        acc_tok = self.tokenizers.get(up.modality) or PrecisionWeightedSum()
        staged_backbone = self.backbone.stage(backbone, {k: weight[k] for k in backbone})
        staged_tokenizer = (
            acc_tok.stage(tokenizer, {k: weight[k] for k in tokenizer}) if tokenizer else None
        )
        self.backbone.commit(staged_backbone)
        if staged_tokenizer is not None:
            acc_tok.commit(staged_tokenizer)
            self.tokenizers[up.modality] = acc_tok
        w = up.node_precision if self.cfg.consensus != "equal" else 1.0
        if self.cfg.rule == "fedavg":
            w = float(up.n_samples)
        w *= trust
        kbar = normalise_gram(center_gram(up.gram.double()))
        s, tw, tp = self.grams.get(up.modality, (torch.zeros_like(kbar), 0.0, 0.0))
        self.grams[up.modality] = (s + w * kbar, tw + w, tp + up.node_precision)
        self.consistency[up.node] = trust
        self.nodes.append(up.node)

    def _weights(self, up: Upload) -> dict[str, Tensor]:
        if self.cfg.rule == "fedavg":
            return {k: torch.tensor(float(up.n_samples)) for k in up.delta}
        missing = sorted(set(up.delta) - set(up.precisions))
        if missing:
            raise ValueError(f"{up.node!r} sent no precision for {missing[:2]}")
        return {k: torch.as_tensor(up.precisions[k]) for k in up.delta}

    def modality_grams(self) -> dict[str, Tensor]:
        """Each modality's precision-weighted mean Gram (centred, normalised)."""
        return {
            m: normalise_gram(center_gram(s / max(tw, 1e-300)))
            for m, (s, tw, _) in self.grams.items()
            if tw > 0
        }

    def modality_weights(self, per_modality: Mapping[str, Tensor]) -> dict[str, float]:
        """omega_m by the configured consensus rule; normalised to sum to 1."""
        mods = sorted(per_modality)
        if self.cfg.consensus == "equal" or self.cfg.rule == "fedavg" or len(mods) == 1:
            raw = dict.fromkeys(mods, 1.0)
        elif self.cfg.consensus == "precision":
            raw = {m: self.grams[m][2] for m in mods}
        else:  # agreement: (mean CKA with the other modalities, floored at 0) ^ power
            raw = {}
            for m in mods:
                mean_cka = sum(
                    float(cka(per_modality[m], per_modality[o])) for o in mods if o != m
                ) / (len(mods) - 1)
                raw[m] = max(0.0, mean_cka) ** self.cfg.agreement_power
        total = sum(raw.values())
        if total <= 0:
            raw, total = dict.fromkeys(mods, 1.0), float(len(mods))
        return {m: v / total for m, v in raw.items()}

    def finish(
        self, global_state: Mapping[str, Tensor], previous_target: Tensor | None
    ) -> tuple[dict[str, Tensor], Tensor, dict[str, float]]:
        """(next global state, next target, modality weights used). global_state is not mutated."""
        if not self.nodes:
            raise ValueError("no uploads to aggregate")
        update = {k: self.cfg.backbone_lr * v for k, v in self.backbone.mean().items()}
        for acc in self.tokenizers.values():
            update.update(acc.mean())
        unknown = sorted(set(update) - set(global_state))
        if unknown:
            raise ValueError(f"uploads name parameters the global state lacks: {unknown[:3]}")
        new_state = {
            k: (v + self.cfg.server_lr * update[k].to(v) if k in update else v.clone())
            for k, v in global_state.items()
        }
        per_modality = self.modality_grams()
        omega = self.modality_weights(per_modality)
        mods = sorted(per_modality)
        n = next(iter(per_modality.values())).shape[0]
        k = min(n - 1, self.cfg.knn if self.cfg.knn > 0 else max(1, round(math.sqrt(n))))
        if self.cfg.fusion == "snf" and self.cfg.knn >= 0 and len(mods) > 1 and n > 2:
            target = similarity_network_fusion(
                [per_modality[m] for m in mods], [omega[m] for m in mods], k
            )
        else:
            target = consensus_gram([per_modality[m] for m in mods], [1.0] * len(mods), mods, omega)
            if self.cfg.knn >= 0 and n > 2:
                target = knn_denoise(target, k)
        if previous_target is not None and self.cfg.target_smoothing > 0:
            beta = self.cfg.target_smoothing
            target = normalise_gram(
                center_gram(beta * previous_target.to(target) + (1 - beta) * target)
            )
            target = 0.5 * (target + target.T)
        return new_state, target.float(), omega
