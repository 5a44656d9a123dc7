"""Evaluation of trained models on a dataset's test sets (BENCHMARK.md metrics).

For each modality the caller supplies the model that embeds it (a site model: global shared
state + that site's magnitudes). Labels come from the dataset's evaluation-only `eval/` tree.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from common.alignment import anchor_gram, cka
from rosetta.metrics import anchor_relative, chance_map, concept_gram, linear_probe, retrieval

Embed = Callable[[Mapping[str, Tensor]], Tensor]  # model inputs -> (n, d)


def eval_labels(dataset: Path, relative: str) -> Tensor:
    """Labels of the folder `relative` inside a dataset (evaluation only)."""
    path = dataset / "eval" / relative / "labels.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (evaluation labels of {relative})")
    return load_file(str(path))["labels"]


@dataclass
class EvalSet:
    """One modality's test inputs and labels, and its anchor inputs (public, concept order)."""

    modality: str
    test: dict[str, Tensor]
    test_labels: Tensor
    anchors: dict[str, Tensor]


def embed_all(embed: Embed, inputs: Mapping[str, Tensor], batch: int = 256) -> Tensor:
    n = int(next(iter(inputs.values())).shape[0])
    out = []
    with torch.no_grad():
        for start in range(0, n, batch):
            out.append(
                embed({k: v[start : start + batch] for k, v in inputs.items()}).cpu().float()
            )
    return torch.cat(out)


def evaluate(
    sets: Mapping[str, EvalSet], embedders: Mapping[str, Embed], anchor_labels: Tensor
) -> dict[str, Any]:
    """All metrics for the modalities in `sets` (keys: modality names).

    Returns {"pairs": {"a->b": {"map", "r1", "p10", "shared_map", "shared_r1", "shared_p10"}},
    "mean_map", "mean_r1" (anchor-relative, the headline), "shared_mean_map", "chance_map",
    "probe": {m: accuracy}, "anchor_cka": {"a|b": CKA of anchor Grams},
    "concept_cka": {m: CKA of m's anchor Gram with the true concept structure}}.
    """
    z, za, rel = {}, {}, {}
    for m, s in sets.items():
        z[m] = embed_all(embedders[m], s.test)
        za[m] = embed_all(embedders[m], s.anchors)
        rel[m] = anchor_relative(z[m], za[m])
    pairs, chances = {}, []
    for a, b in itertools.permutations(sorted(sets), 2):
        ya, yb = sets[a].test_labels, sets[b].test_labels
        r = retrieval(rel[a], ya, rel[b], yb)
        s = retrieval(z[a], ya, z[b], yb)
        pairs[f"{a}->{b}"] = {**r, **{f"shared_{k}": v for k, v in s.items()}}
        chances.append(chance_map(ya, yb))
    probe = {}
    for m, s in sets.items():
        idx = torch.arange(len(s.test_labels))
        train, test = idx[idx % 2 == 0], idx[idx % 2 == 1]
        probe[m] = linear_probe(z[m][train], s.test_labels[train], z[m][test], s.test_labels[test])
    grams = {m: anchor_gram(za[m].double()) for m in sets}
    truth = concept_gram(anchor_labels)

    def mean(key: str) -> float:
        return float(np.mean([p[key] for p in pairs.values()])) if pairs else float("nan")

    return {
        "pairs": pairs,
        "mean_map": mean("map"),
        "mean_r1": mean("r1"),
        "mean_p10": mean("p10"),
        "shared_mean_map": mean("shared_map"),
        "chance_map": float(np.mean(chances)) if chances else float("nan"),
        "probe": probe,
        "anchor_cka": {
            f"{a}|{b}": float(cka(grams[a], grams[b]))
            for a, b in itertools.combinations(sorted(sets), 2)
        },
        "concept_cka": {m: float(cka(grams[m], truth)) for m in sets},
    }


TEST_SEED_OFFSET = 7919  # test subsets draw from their own generator, independent of the rest


def capped_test_indices(
    dataset: Path, tests: Mapping[str, str], max_test: int, seed: int
) -> dict[str, Tensor]:
    """Indices of each test set kept under a cap of `max_test` (0 = all): a seeded random subset
    in the layout's order of test sets, the same for `rosetta simulate` and `rosetta evaluate`
    (test folders can be sorted by class, so the first rows are not a sample)."""
    gen = torch.Generator().manual_seed(seed + TEST_SEED_OFFSET)
    out = {}
    for name, rel in tests.items():
        total = len(eval_labels(dataset, rel))
        out[name] = (
            torch.randperm(total, generator=gen)[:max_test].sort().values
            if 0 < max_test < total
            else torch.arange(total)
        )
    return out


def evaluate_exported(
    model_dir: Path,
    dataset: Path | None = None,
    layout_name: str | None = None,
    anchors_name: str | None = None,
    max_test: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """`rosetta evaluate`: the metrics of an exported model (model.json + shared.safetensors,
    optional sites/) on a dataset's test sets. Per modality the site model of its largest site
    is used when sites are exported, else the global model with its initial magnitudes."""
    import dataclasses
    import json

    from common.dataformat import read_anchor_set, read_data_folder
    from common.inputs import to_model_inputs
    from common.modelio import load_model, load_site
    from common.partition import load_local_state, load_shared_state, modality_view
    from common.pretrained import WordPieceTokenizer, build_model

    cfg, shared, doc = load_model(model_dir)
    dataset = dataset or Path(doc.get("dataset", ""))
    layout_path = dataset / "layouts" / f"{layout_name or doc.get('layout', 'demo')}.json"
    if not layout_path.is_file():
        raise ValueError(f"{layout_path}: no such layout (build the data with 'make data')")
    layout = json.loads(layout_path.read_text())
    anchors_rel = layout["anchors"][anchors_name or doc.get("anchors", "k20")]
    anchors = read_anchor_set(dataset / anchors_rel, modalities=list(cfg.modalities))
    cfg = dataclasses.replace(cfg, device="cpu")
    tokenizer = (
        WordPieceTokenizer(cfg.tokenizers.text_max_tokens) if "text" in cfg.modalities else None
    )
    sites = doc.get("sites", {})
    keep = capped_test_indices(dataset, layout["tests"], max_test, seed)
    sets, embedders = {}, {}
    for m in cfg.modalities:
        if m not in layout["tests"]:
            continue
        test = read_data_folder(dataset / layout["tests"][m])
        idx = keep[m]
        inputs = {k: v[idx] for k, v in to_model_inputs(test, cfg, tokenizer).items()}
        labels = eval_labels(dataset, layout["tests"][m])[idx]
        anchor_inputs = to_model_inputs(anchors.modalities[m], cfg, tokenizer)
        sets[m] = EvalSet(m, inputs, labels, anchor_inputs)
        model = build_model(cfg.with_modalities(m))
        load_shared_state(model, modality_view(shared, m))
        own = [n for n, s in sites.items() if s["modality"] == m]
        if own:  # the site model of the modality's largest site
            best = max(own, key=lambda n: sites[n]["samples"])
            load_local_state(model, load_site(model_dir, best))
        model.eval()
        embedders[m] = _model_embedder(model, m)
    return evaluate(sets, embedders, eval_labels(dataset, anchors_rel))


def _model_embedder(model: Any, modality: str) -> Embed:
    def embed(batch: Mapping[str, Tensor]) -> Tensor:
        with torch.no_grad():
            return model(modality, batch)

    return embed
