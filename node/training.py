"""One node's local training round: the only training routine (benchmark and service call it).

    L_k = InfoNCE(two augmented views of private data)
          + lambda * (1 - CKA(anchor_gram(own-modality anchors), T))   if a target T is given
          + mu * SupCon(private labels)                                if labels are given

A round returns what the node may send: shared-parameter deltas, its anchor Gram, precisions
and scalars. Magnitudes (local) are trained but stay in the model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from common.aggregation import StateDelta
from common.alignment import anchor_gram, cka, gram_block
from common.config import TrainConfig
from common.losses import info_nce, supervised_contrastive
from common.model import HomogeneousTransformer
from common.partition import local_names, shared_names, shared_state, subtract
from common.precision import DiagonalFisher, anchor_coverage
from node.augment import AUGMENTERS, augment_text

Inputs = Mapping[str, Tensor]


def take(data: Inputs, index: Tensor) -> dict[str, Tensor]:
    """Rows `index` of every tensor in a batch mapping."""
    return {k: v.index_select(0, index.to(v.device)) for k, v in data.items()}


def count_rows(data: Inputs, what: str) -> int:
    """The common leading dimension of a batch mapping; ValueError if they disagree or are empty."""
    sizes = {k: int(v.shape[0]) for k, v in data.items()}
    if not sizes or len(set(sizes.values())) != 1:
        raise ValueError(f"{what} tensors must share one leading dimension, got {sizes}")
    n = next(iter(sizes.values()))
    if n == 0:
        raise ValueError(f"{what} is empty")
    return n


class RoundInterrupted(Exception):
    """Local training was stopped before the round's last step."""


@dataclass
class RoundResult:
    """What one node produces in one round; every field may cross the wire."""

    delta: dict[str, Tensor]  # shared name -> after - before (CPU)
    gram: Tensor  # N x N anchor Gram, centred and normalised (CPU)
    precisions: dict[str, Tensor]  # shared name -> scalar tensor or per-element tensor
    node_precision: float  # w_k
    n_samples: int
    loss: float  # mean total loss over the round's steps
    cka: float  # CKA of the final anchor Gram with the target (nan without a target)
    stats: dict[str, float] = field(default_factory=dict)


class LocalTrainer:
    """Holds a node's model, optimiser and Fisher accumulator across rounds.

    model: the node's HomogeneousTransformer (adapters attached); data: its private inputs
    (leading dim = samples); anchors: its modality's public anchor inputs in global order.
    """

    def __init__(
        self,
        model: HomogeneousTransformer,
        modality: str,
        data: Inputs,
        anchors: Inputs,
        cfg: TrainConfig,
        labels: Tensor | None = None,
    ) -> None:
        self.model, self.modality, self.cfg = model, modality, cfg
        self.device = next(model.parameters()).device
        self.n_samples = count_rows(data, "private data")
        self.n_anchors = count_rows(anchors, "anchors")
        if self.n_anchors < 2:
            raise ValueError("need at least 2 anchors")
        if labels is not None and labels.shape != (self.n_samples,):
            raise ValueError(
                f"labels must have shape ({self.n_samples},), got {tuple(labels.shape)}"
            )
        self.data, self.anchors, self.labels = data, anchors, labels
        params = dict(model.named_parameters())
        self.shared = [(n, params[n]) for n in shared_names(model)]
        local = [params[n] for n in local_names(model)]
        groups: list[dict[str, Any]] = [{"params": [p for _, p in self.shared], "lr": cfg.lr}]
        if local:
            groups.append({"params": local, "lr": cfg.magnitude_lr, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.fisher = DiagonalFisher(prior=cfg.fisher_prior)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        # Optional extra term on the step's anchor subset: (anchor indices, their z) -> loss.
        # Used only by the benchmark's peer baselines that share more than Grams.
        self.auxiliary: Callable[[Tensor, Tensor], Tensor] | None = None
        self.augment = AUGMENTERS[modality]
        if modality == "text":
            mask_id = model.config.tokenizers.text_mask_id
            self.augment = functools.partial(augment_text, mask_id=mask_id)

    def _to_device(self, batch: Inputs) -> dict[str, Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}

    def step(self, target: Tensor | None) -> dict[str, float]:
        """One optimiser step; returns the loss terms."""
        cfg = self.cfg
        idx = torch.randint(
            self.n_samples, (min(cfg.batch_size, self.n_samples),), generator=self.gen
        )
        batch = take(self.data, idx)
        v1, v2 = self.augment(batch, self.gen), self.augment(batch, self.gen)
        views = self._to_device({k: torch.cat([v1[k], v2[k]]) for k in v1})
        z = self.model(self.modality, views)
        z1, z2 = z.chunk(2)
        loss_self = info_nce(z1, z2, cfg.temperature)
        loss = loss_self
        terms = {"loss_self": loss_self.item()}
        use_cka = target is not None and cfg.cka_weight > 0
        if use_cka or self.auxiliary is not None:
            sub = self._anchor_subset()
            za = self.model(self.modality, self._to_device(take(self.anchors, sub)))
            if use_cka:
                assert target is not None
                c = cka(anchor_gram(za), gram_block(target.to(za), sub.to(self.device)))
                loss = loss + cfg.cka_weight * (1.0 - c)
                terms["cka_step"] = c.item()
            if self.auxiliary is not None:
                aux = self.auxiliary(sub, za)
                loss = loss + aux
                terms["loss_auxiliary"] = aux.item()
        if self.labels is not None and cfg.supervised_weight > 0:
            y = self.labels[idx].to(self.device)
            sup = supervised_contrastive(z, torch.cat([y, y]), cfg.temperature)
            loss = loss + cfg.supervised_weight * sup
            terms["loss_supervised"] = sup.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.fisher.observe(((n, p.grad) for n, p in self.shared), batch_size=idx.numel())
        self.optimizer.step()
        terms["loss"] = loss.item()
        return terms

    def _anchor_subset(self) -> Tensor:
        k = self.cfg.anchors_per_step
        if k == 0 or k >= self.n_anchors:
            return torch.arange(self.n_anchors)
        return torch.randperm(self.n_anchors, generator=self.gen)[:k].sort().values

    @torch.no_grad()
    def embed(self, inputs: Inputs) -> Tensor:
        """z for every row of `inputs`, in batches, without gradients: (n, d) on CPU."""
        n = count_rows(inputs, "inputs")
        out = []
        for start in range(0, n, self.cfg.embed_batch):
            idx = torch.arange(start, min(n, start + self.cfg.embed_batch))
            out.append(self.model(self.modality, self._to_device(take(inputs, idx))).cpu())
        return torch.cat(out)

    def coverage(self, z_anchors: Tensor) -> float:
        """anchor_coverage of up to cfg.coverage_samples evenly spaced private samples (1.0 when
        the factor is off)."""
        if self.cfg.coverage_power == 0:
            return 1.0
        n = min(self.cfg.coverage_samples, self.n_samples)
        idx = torch.linspace(0, self.n_samples - 1, n).round().long().unique()
        return anchor_coverage(self.embed(take(self.data, idx)), z_anchors)

    def current_gram(self) -> Tensor:
        """The node's anchor Gram with its current model (N x N, CPU)."""
        return anchor_gram(self.embed(self.anchors).double()).float()

    def run_round(
        self,
        target: Tensor | None,
        steps: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RoundResult:
        """Train `steps` (default cfg.steps) and return delta, Gram, precisions and scalars.

        should_stop is checked before every step; when it turns true the round is abandoned
        with RoundInterrupted (the daemon's SIGTERM path; the checkpoint is untouched)."""
        if target is not None and target.shape != (self.n_anchors, self.n_anchors):
            raise ValueError(
                f"target gram is {tuple(target.shape)}, this node has {self.n_anchors} anchors"
            )
        before = shared_state(self.model)
        self.fisher.reset()
        self.model.train()
        history = []
        for _ in range(steps or self.cfg.steps):
            if should_stop is not None and should_stop():
                raise RoundInterrupted("stop requested during local training")
            history.append(self.step(target))
        self.model.eval()
        delta = {k: v.cpu() for k, v in subtract(shared_state(self.model), before).items()}
        z_anchors = self.embed(self.anchors)
        gram = anchor_gram(z_anchors.double()).float()
        coverage = self.coverage(z_anchors)
        n_eff = self.n_samples * coverage**self.cfg.coverage_power
        per_element = self.fisher.per_element(max(n_eff, 1e-6))
        if self.cfg.precision == "tensor":
            precisions = {k: v.double().mean().float() for k, v in per_element.items()}
        else:
            precisions = {k: v.cpu() for k, v in per_element.items()}
        final_cka = float(cka(gram, target.float())) if target is not None else float("nan")
        mean = {k: sum(h.get(k, 0.0) for h in history) / len(history) for k in history[-1]}
        mean["coverage"] = coverage
        return RoundResult(
            delta=delta,
            gram=gram,
            precisions=precisions,
            node_precision=self.fisher.node_precision(max(n_eff, 1e-6)),
            n_samples=self.n_samples,
            loss=mean["loss"],
            cka=final_cka,
            stats=mean,
        )


def apply_delta(model: nn.Module, delta: StateDelta) -> None:
    """Add a (global) delta to the model's shared parameters in place; keys must be shared names."""
    params = dict(model.named_parameters())
    unknown = sorted(set(delta) - set(shared_names(model)))
    if unknown:
        raise ValueError(f"delta has names that are not shared parameters: {unknown[:3]}")
    with torch.no_grad():
        for name, d in delta.items():
            params[name].add_(d.to(params[name]))
