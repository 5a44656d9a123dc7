"""A whole federation on one machine: in-process nodes and the coordinator's round rule.

Calls exactly the code the service runs: node.training.LocalTrainer for every node and
coordinator.strategy.RoundAggregate for every round. Nothing here re-implements the method.

    rosetta simulate --config FILE.toml      (tables [simulation], [strategy], [model], [train])
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from common.alignment import cka
from common.config import ModelConfig, TrainConfig
from common.dataformat import read_anchor_set, read_data_folder
from common.inputs import to_model_inputs
from common.modelio import save_model, save_site
from common.partition import (
    load_shared_state,
    local_state,
    modality_of,
    modality_view,
    shared_state,
)
from common.pretrained import WordPieceTokenizer, build_model
from coordinator.strategy import RoundAggregate, StrategyConfig, Upload
from node.training import LocalTrainer, RoundResult
from rosetta.evaluate import EvalSet, capped_test_indices, eval_labels, evaluate
from rosetta.metrics import concept_gram
from rosetta.peers import PEERS, PeerTable, payload, pull_towards

MODES = ("federated", "local_only", "centralised")


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """Which data, how many rounds, what to write."""

    dataset: str = "data/digits4m"
    layout: str = "demo"
    anchors: str = "k20"
    rounds: int = 10
    # "federated"; "local_only": no aggregation, no target (the lower bound); "centralised": all
    # data of a modality pooled into one trainer, all trainers sharing ONE model (no federation)
    mode: str = "federated"
    supervised: bool = (
        False  # centralised ceiling: private labels (SupCon) and the true anchor structure
    )
    peer: str = "none"  # benchmark peers that share more: "anchor_embeddings" or "prototypes"
    peer_weight: float = 1.0  # weight of the peers' pull towards the shared table
    max_private: int = 0  # per node cap on private samples (0 = all), a seeded random subset
    max_test: int = 300  # per test set cap (0 = all)
    eval_every: int = 0  # also evaluate every n rounds (0 = only at the end)
    corrupt_nodes: tuple[str, ...] = ()  # stress case: these nodes' private data is corrupted
    corrupt_snr_db: float = -10.0  # additive Gaussian noise at this SNR
    seed: int = 0
    out: str = "runs/simulation"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"simulation.mode must be one of {MODES}, got {self.mode!r}")
        if self.peer not in PEERS:
            raise ValueError(f"simulation.peer must be one of {PEERS}, got {self.peer!r}")
        if self.supervised and self.mode != "centralised":
            raise ValueError("simulation.supervised is only for mode = 'centralised'")
        if self.rounds <= 0:
            raise ValueError(f"simulation.rounds must be positive, got {self.rounds}")
        for name in ("max_private", "max_test", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"simulation.{name} must be >= 0")


@dataclass
class SimNode:
    name: str
    modality: str
    trainer: LocalTrainer
    n_samples: int


@dataclass
class Federation:
    """Everything a simulation run holds in memory."""

    nodes: list[SimNode]
    eval_sets: dict[str, EvalSet]
    anchor_labels: Tensor
    anchor_count: int
    extra_tests: dict[str, tuple[str, EvalSet]] = field(default_factory=dict)  # name -> (node, set)


def _subset(
    inputs: Mapping[str, Tensor], n: int, gen: torch.Generator
) -> tuple[dict[str, Tensor], Tensor]:
    total = int(next(iter(inputs.values())).shape[0])
    idx = (
        torch.randperm(total, generator=gen)[:n].sort().values
        if 0 < n < total
        else torch.arange(total)
    )
    return {k: v[idx] for k, v in inputs.items()}, idx


def corrupt(
    inputs: Mapping[str, Tensor], modality: str, snr_db: float, gen: torch.Generator
) -> dict[str, Tensor]:
    """Additive Gaussian noise at `snr_db` relative to each sample's power (text: unchanged)."""
    key = {"image": "pixels", "audio": "waveform", "sensor": "signal"}.get(modality)
    if key is None:
        return dict(inputs)
    x = inputs[key]
    power = x.float().square().flatten(1).mean(1).clamp_min(1e-12)
    scale = torch.sqrt(power / 10 ** (snr_db / 10)).view(-1, *([1] * (x.dim() - 1)))
    noisy = x.float() + torch.randn(x.shape, generator=gen) * scale
    if modality == "image":
        noisy = noisy.clamp(0, 1)
    return {**inputs, key: noisy}


def load_federation(
    sim: SimulationConfig, model_cfg: ModelConfig, train_cfg: TrainConfig
) -> Federation:
    root = Path(sim.dataset)
    layout = json.loads((root / "layouts" / f"{sim.layout}.json").read_text())
    modalities = sorted({n["modality"] for n in layout["nodes"]})
    anchor_rel = layout["anchors"][sim.anchors]
    anchors = read_anchor_set(root / anchor_rel, modalities=modalities)
    tokenizer = (
        WordPieceTokenizer(model_cfg.tokenizers.text_max_tokens) if "text" in modalities else None
    )
    anchor_inputs = {
        m: to_model_inputs(anchors.modalities[m], model_cfg, tokenizer) for m in modalities
    }
    gen = torch.Generator().manual_seed(sim.seed)
    unknown = set(sim.corrupt_nodes) - {n["name"] for n in layout["nodes"]}
    if unknown:
        raise ValueError(f"simulation.corrupt_nodes names unknown nodes: {sorted(unknown)}")
    shards: list[tuple[str, str, dict[str, Tensor], Tensor]] = []
    for entry in layout["nodes"]:
        m = entry["modality"]
        raw = to_model_inputs(read_data_folder(root / entry["data"]), model_cfg, tokenizer)
        inputs, idx = _subset(raw, sim.max_private, gen)
        if entry["name"] in sim.corrupt_nodes:
            # its own generator: corrupting a node leaves every other node's subset unchanged
            noise = torch.Generator().manual_seed(sim.seed + 7919 * (1 + len(shards)))
            inputs = corrupt(inputs, m, sim.corrupt_snr_db, noise)
        shards.append((entry["name"], m, inputs, eval_labels(root, entry["data"])[idx]))
    if sim.mode == "centralised":  # pool every modality's shards; one model for all
        pooled = []
        for m in modalities:
            parts = [s for s in shards if s[1] == m]
            merged = {k: torch.cat([p[2][k] for p in parts]) for k in parts[0][2]}
            pooled.append((m, m, merged, torch.cat([p[3] for p in parts])))
        shards = pooled
    shared_model = (
        build_model(model_cfg.with_modalities(*modalities)) if sim.mode == "centralised" else None
    )
    nodes = []
    for i, (name, m, inputs, labels) in enumerate(shards):
        model = shared_model or build_model(model_cfg.with_modalities(m))
        cfg_i = dataclasses.replace(train_cfg, seed=train_cfg.seed + i)
        trainer = LocalTrainer(
            model, m, inputs, anchor_inputs[m], cfg_i, labels=labels if sim.supervised else None
        )
        nodes.append(SimNode(name, m, trainer, trainer.n_samples))
    eval_sets, extra = {}, {}
    keep = capped_test_indices(root, layout["tests"], sim.max_test, sim.seed)
    for name, rel in layout["tests"].items():
        samples = read_data_folder(root / rel)
        idx = keep[name]
        inputs = {k: v[idx] for k, v in to_model_inputs(samples, model_cfg, tokenizer).items()}
        labels = eval_labels(root, rel)[idx]
        m = samples.modality
        if m not in modalities:
            continue
        es = EvalSet(m, inputs, labels, anchor_inputs[m])
        if name == m:
            eval_sets[m] = es
        elif any(n.name == name for n in nodes):  # a site-specific test set (e.g. optdigits)
            extra[name] = (name, es)
    return Federation(nodes, eval_sets, eval_labels(root, anchor_rel), len(anchors), extra)


def upload_of(node: SimNode, result: RoundResult) -> Upload:
    """The node's upload; only its own modality's tokenizer (a centralised model holds all)."""
    own = [k for k in result.delta if modality_of(k) in (None, node.modality)]
    return Upload(
        node.name,
        node.modality,
        {k: result.delta[k] for k in own},
        {k: result.precisions[k] for k in own if k in result.precisions},
        result.node_precision,
        result.gram,
        result.n_samples,
    )


def _numel(tensors: Mapping[str, Tensor]) -> int:
    return sum(int(t.numel()) for t in tensors.values())


def site_embedders(fed: Federation) -> dict[str, Callable[[Mapping[str, Tensor]], Tensor]]:
    """Per modality, the site model of its largest node (global shared state + its magnitudes)."""
    best: dict[str, SimNode] = {}
    for n in fed.nodes:
        if n.modality not in best or n.n_samples > best[n.modality].n_samples:
            best[n.modality] = n
    return {m: _embedder(n) for m, n in best.items()}


def _embedder(n: SimNode) -> Callable[[Mapping[str, Tensor]], Tensor]:
    n.trainer.model.eval()
    return lambda batch: n.trainer.embed(batch)


def run(
    sim: SimulationConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    strategy: StrategyConfig,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the simulation, write results under sim.out, return the results dictionary."""
    start = time.perf_counter()
    fed = load_federation(sim, model_cfg, train_cfg)
    modalities = sorted({n.modality for n in fed.nodes})
    global_state = shared_state(
        build_model(dataclasses.replace(model_cfg, modalities=tuple(modalities), device="cpu"))
    )
    truth = concept_gram(fed.anchor_labels)
    federated, centralised = sim.mode == "federated", sim.mode == "centralised"
    target: Tensor | None = truth.float() if sim.supervised else None
    history: list[dict[str, Any]] = []
    grams: dict[str, Tensor] = {}
    n_pairs = fed.anchor_count * (fed.anchor_count + 1) // 2
    for rnd in range(1, sim.rounds + 1):
        t0 = time.perf_counter()
        agg = RoundAggregate(strategy, reference=target)
        peers = PeerTable()
        record: dict[str, Any] = {"round": rnd, "nodes": {}}
        for node in fed.nodes:
            down = modality_view(global_state, node.modality)
            if federated:
                load_shared_state(node.trainer.model, down)
            result = node.trainer.run_round(None if sim.mode == "local_only" else target)
            extra = 0
            if sim.peer != "none":
                table, weights = payload(sim.peer, node.trainer)
                peers.add(table, weights)
                extra = table.numel() + weights.numel()
            agg.add(upload_of(node, result))
            up = 4 * (_numel(result.delta) + _numel(result.precisions) + n_pairs + extra) + 64
            record["nodes"][node.name] = {
                "loss": result.loss,
                "cka_to_target": result.cka,
                "node_precision": result.node_precision,
                "coverage": result.stats.get("coverage", 1.0),
                "bytes_up": 0 if centralised else up,
                "bytes_down": 4 * (_numel(down) + n_pairs + extra) + 64 if federated else 0,
            }
        if sim.peer != "none":
            table = peers.mean()
            for node in fed.nodes:
                node.trainer.auxiliary = pull_towards(table, sim.peer_weight)
        if federated or (centralised and not sim.supervised):
            new_state, target, omega = agg.finish(global_state, target)
            if federated:  # centralised: the one shared model already holds every update
                global_state = new_state
            if federated and rnd == sim.rounds:  # the final global state reaches every site model
                for node in fed.nodes:
                    load_shared_state(
                        node.trainer.model, modality_view(global_state, node.modality)
                    )
            record["modality_weights"] = omega
            record["consistency"] = dict(agg.consistency)
            for m, g in agg.modality_grams().items():  # kept for offline analysis of the consensus
                grams[f"round{rnd}.{m}"] = g.float().contiguous()
            record["target_concept_cka"] = float(cka(target.double(), truth))  # evaluation only
        record["wall_s"] = time.perf_counter() - t0
        if sim.eval_every and rnd % sim.eval_every == 0 and rnd != sim.rounds:
            record["eval"] = _evaluate(fed)
        history.append(record)
        log(
            f"round {rnd}/{sim.rounds}: {record['wall_s']:.1f}s"
            + (
                f", target CKA with concepts {record['target_concept_cka']:.3f}"
                if "target_concept_cka" in record
                else ""
            )
            + (f", mean mAP {record['eval']['mean_map']:.3f}" if "eval" in record else "")
        )
    final = _evaluate(fed)
    results = {
        "config": {
            "simulation": dataclasses.asdict(sim),
            "strategy": dataclasses.asdict(strategy),
            "model": dataclasses.asdict(model_cfg),
            "train": dataclasses.asdict(train_cfg),
        },
        "nodes": {n.name: {"modality": n.modality, "samples": n.n_samples} for n in fed.nodes},
        "rounds": history,
        "final": final,
        "mean_map": final["mean_map"],
        "mean_r1": final["mean_r1"],
        "pairs": final["pairs"],
        "bytes_per_node_per_round": {
            n.name: {
                "up": sum(r["nodes"][n.name]["bytes_up"] for r in history) / len(history),
                "down": sum(r["nodes"][n.name]["bytes_down"] for r in history) / len(history),
            }
            for n in fed.nodes
        },
        "wall_s": time.perf_counter() - start,
    }
    write_outputs(Path(sim.out), results)
    if federated:  # the exported model `rosetta evaluate` reads, with every site's magnitudes
        folder = Path(sim.out) / "model"
        meta = {
            "round": sim.rounds,
            "dataset": sim.dataset,
            "layout": sim.layout,
            "anchors": sim.anchors,
            "sites": {n.name: {"modality": n.modality, "samples": n.n_samples} for n in fed.nodes},
        }
        save_model(
            folder, dataclasses.replace(model_cfg, modalities=tuple(modalities)), global_state, meta
        )
        for n in fed.nodes:
            save_site(folder, n.name, local_state(n.trainer.model))
    if grams:
        save_file(grams, str(Path(sim.out) / "modality_grams.safetensors"))
    return results


def _evaluate(fed: Federation) -> dict[str, Any]:
    out = evaluate(fed.eval_sets, site_embedders(fed), fed.anchor_labels)
    for name, (node_name, es) in fed.extra_tests.items():
        node = next(n for n in fed.nodes if n.name == node_name)
        others = {m: s for m, s in fed.eval_sets.items() if m != es.modality}
        sets = {**others, f"{name}": dataclasses.replace(es)}
        embedders = {
            **{m: e for m, e in site_embedders(fed).items() if m in others},
            name: _embedder(node),
        }
        sub = evaluate(sets, embedders, fed.anchor_labels)
        out.setdefault("sites", {})[name] = {
            "mean_map_from": float(
                sum(v["map"] for k, v in sub["pairs"].items() if k.startswith(f"{name}->"))
                / max(1, len(others))
            ),
            "concept_cka": sub["concept_cka"][name],
        }
    return out


def write_outputs(out: Path, results: Mapping[str, Any]) -> None:
    """results.json, rounds.jsonl and PNG plots (metric per round, per modality pair)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps(results, indent=2, sort_keys=True, default=float) + "\n"
    )
    with (out / "rounds.jsonl").open("w") as f:
        for r in results["rounds"]:
            f.write(json.dumps(r, sort_keys=True, default=float) + "\n")
    plot(out, results)


def plot(out: Path, results: Mapping[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = results["rounds"]
    xs = [r["round"] for r in rounds]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    for name in results["nodes"]:
        ax.plot(xs, [r["nodes"][name]["loss"] for r in rounds], label=name)
    ax.set(title="local training loss per round", xlabel="round", ylabel="loss")
    ax.legend(fontsize=7)
    ax = axes[1]
    if any("target_concept_cka" in r for r in rounds):
        ax.plot(
            xs,
            [r.get("target_concept_cka", float("nan")) for r in rounds],
            "k-",
            label="target vs true concepts",
        )
    for name in results["nodes"]:
        ax.plot(
            xs, [r["nodes"][name]["cka_to_target"] for r in rounds], "--", label=f"{name} vs target"
        )
    evals = [(r["round"], r["eval"]["mean_map"]) for r in rounds if "eval" in r] + [
        (xs[-1], results["mean_map"])
    ]
    ax.plot([e[0] for e in evals], [e[1] for e in evals], "ro-", label="mean mAP (anchor-relative)")
    ax.set(title="alignment per round", xlabel="round", ylim=(0, 1))
    ax.legend(fontsize=7)
    ax = axes[2]
    pairs = results["pairs"]
    names = sorted(pairs)
    ax.barh(names, [pairs[n]["map"] for n in names], label="anchor-relative")
    ax.barh(names, [pairs[n]["shared_map"] for n in names], alpha=0.5, label="shared space")
    ax.axvline(results["final"]["chance_map"], color="k", linestyle=":", label="chance")
    ax.set(title="retrieval mAP per modality pair", xlabel="mAP")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=110)
    plt.close(fig)
