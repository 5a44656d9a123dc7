"""Render results/quality.json as docs/BENCHMARKS.md with plots (docs/img/)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROLE = {
    "anchors_only": "ridge map on anchor tuples, fixed features (shares nothing)",
    "anchor_relative_fixed": "anchor-relative coordinates of fixed features (shares nothing)",
    "local_only": "each node trains alone (lower bound)",
    "fedavg_no_anchors": "FedAvg of adapters, no anchors",
    "prototype_sharing": "FedProto-style: per-anchor means of private embeddings (shares more)",
    "anchor_embedding_sharing": "CreamFL-style: anchor embeddings (shares more)",
    "rosetta": "the method: Grams, deltas, precisions",
    "rosetta_no_cka": "ablation: no CKA term",
    "rosetta_no_precision": "ablation: sample-count FedAvg, equal consensus weights",
    "rosetta_no_magnitude": "ablation: plain LoRA (no magnitude/direction decoupling)",
    "rosetta_trained_a": "A trained and shared like B",
    "rosetta_frozen_a": "ablation: A frozen and shared (METHOD.md's original choice)",
    "centralised": "all data pooled, same objective",
    "centralised_supervised": "all data pooled + labels (ceiling)",
}


def _mean_p10(run: Mapping[str, Any]) -> float:
    if "mean_p10" in run:
        return float(run["mean_p10"])
    values = [p["p10"] for p in run["pairs"].values()]
    return sum(values) / len(values)


def _runs_table(runs: Mapping[str, Any]) -> list[str]:
    lines = [
        "| run | role | mean mAP | mean R@1 | mean P@10 | shared-space mAP |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        shared = r.get("shared_mean_map")
        role = ROLE.get(name, "")
        if r.get("same_as"):
            role += f" (the base config already does this: the `{r['same_as']}` run)"
        lines.append(
            f"| `{name}` | {role} | {r['mean_map']:.3f} | {r['mean_r1']:.3f} | "
            f"{_mean_p10(r):.3f} | {'-' if shared is None else f'{shared:.3f}'} |"
        )
    return lines


def _site(info: Mapping[str, float]) -> str:
    if not info:
        return "not measured"
    return f"mAP from optdigits {info['mean_map_from']:.3f}, concept CKA {info['concept_cka']:.3f}"


def _shown(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{key} {value:.3f}"
    if isinstance(value, Mapping):
        return f"{key}: {_site(value)}"
    return f"{key} {value}"


def _model_line(base: Mapping[str, Any]) -> str:
    model, train = base.get("model", {}), base.get("train", {})
    layers = model.get("backbone", {}).get("layers", 6)
    return (
        f"Model: all-MiniLM-L6-v2 cut to its first {layers} layer(s), frozen, with the default rank-8"
        f" adapters; tokenizer settings {model.get('tokenizers', {})}; {train.get('steps')} local steps"
        f" of batch {train.get('batch_size')} per round, lambda {train.get('cka_weight')}, lr"
        f" {train.get('lr')}. The cut keeps the ~30 trained runs inside the hour on 2 cores (see"
        " What was tried); the service's default model is the full 6-layer encoder."
    )


def _pairs_table(runs: Mapping[str, Any], names: tuple[str, ...]) -> list[str]:
    present = [n for n in names if n in runs]
    if not present:
        return []
    pairs = sorted(runs[present[0]]["pairs"])
    lines = [
        "| pair | " + " | ".join(f"`{n}`" for n in present) + " |",
        "|---" * (len(present) + 1) + "|",
    ]
    for p in pairs:
        lines.append(
            f"| {p} | " + " | ".join(f"{runs[n]['pairs'][p]['map']:.3f}" for n in present) + " |"
        )
    return lines


def _plot(result: Mapping[str, Any], img: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    files = []
    tables = [(k, result[k]) for k in ("runs", "runs_k50") if k in result]
    fig, axes = plt.subplots(1, len(tables), figsize=(7 * len(tables), 5), squeeze=False)
    for ax, (key, runs) in zip(axes[0], tables, strict=True):
        names = list(runs)
        ax.barh(
            names,
            [runs[n]["mean_map"] for n in names],
            color=["C3" if n == "rosetta" else "C0" for n in names],
        )
        chance = next(iter(runs.values())).get("chance_map")
        if chance:
            ax.axvline(chance, color="k", linestyle=":", label="chance")
        ax.set(title=f"mean cross-modal mAP ({key})", xlabel="mAP (anchor-relative)")
        ax.invert_yaxis()
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / "quality_runs.png", dpi=100)
    plt.close(fig)
    files.append("img/quality_runs.png")
    rosetta = result.get("runs", {}).get("rosetta", {})
    per_round = rosetta.get("target_concept_cka_per_round")
    if per_round:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(range(1, len(per_round) + 1), per_round, "o-")
        ax.set(
            title="Rosetta: CKA of the consensus target with the true concepts",
            xlabel="round",
            ylabel="CKA",
            ylim=(0, 1),
        )
        fig.tight_layout()
        fig.savefig(img / "quality_target_cka.png", dpi=100)
        plt.close(fig)
        files.append("img/quality_target_cka.png")
    return files


def _ordered(runs: Mapping[str, Any]) -> dict[str, Any]:
    """Runs in the table's order (a reloaded JSON has its keys sorted)."""
    return {
        **{n: runs[n] for n in ROLE if n in runs},
        **{n: r for n, r in runs.items() if n not in ROLE},
    }


def render(result: Mapping[str, Any], docs: Path, out: Path) -> None:
    result = {
        **result,
        **{k: _ordered(result[k]) for k in ("runs", "runs_k50", "runs_k5") if k in result},
    }
    files = _plot(result, docs.parent / "img")
    sim = result["base_config"].get("simulation", {})
    lines = [
        "# Benchmarks: quality on Digits-4M",
        "",
        f"Command: `{result['command']}` (what `make bench-quality` runs); wall time {result['wall_s']:.0f} s"
        " on this machine (2 cores, CPU only). Raw numbers: `results/quality.json`.",
        "",
        f"Setting: layout `{sim.get('layout', 'demo')}`, {sim.get('rounds')} rounds, at most"
        f" {sim.get('max_private')} private samples per node, {sim.get('max_test')} test samples per"
        " modality, seed policy: one seed (0) for data subsets, initialisation and training, the same"
        " for every run. Base configuration: `bench/quality.toml`. mAP is over the whole gallery,"
        " relevance = same digit, averaged over the 12 ordered modality pairs, in anchor-relative"
        " coordinates (the shared-space column compares z directly).",
        "",
        _model_line(result["base_config"]),
        "",
    ]
    for key, title in (
        ("runs", "k = 20 anchors per class"),
        ("runs_k50", "k = 50 anchors per class"),
    ):
        if key in result:
            lines += [f"## {title}", "", *_runs_table(result[key]), ""]
    if "runs_k5" in result:
        lines += ["## k = 5 anchors per class", "", *_runs_table(result["runs_k5"]), ""]
    if "runs" in result:
        lines += [
            "### Per modality pair (k = 20, mAP)",
            "",
            *_pairs_table(
                result["runs"],
                (
                    "anchors_only",
                    "anchor_relative_fixed",
                    "rosetta",
                    "centralised",
                    "centralised_supervised",
                ),
            ),
            "",
        ]
    stress = result.get("stress")
    if stress:
        lines += [
            "## Stress cases (layout `stress`)",
            "",
            "| run | mean mAP |",
            "|---|---|",
            *[f"| `{n}` | {r['mean_map']:.3f} |" for n, r in stress["runs"].items()],
            "",
            f"- Corrupted audio site (`audio-2`, Gaussian noise at the configured SNR): drop in mean mAP"
            f" with precision weighting {stress['corrupted_drop_precision']:+.3f}, with sample-count"
            f" FedAvg {stress['corrupted_drop_fedavg']:+.3f}.",
            "- optdigits site (mean mAP from optdigits test queries, embedded by the optdigits site"
            " model, to the other modalities; CKA of that site's anchor Gram with the true concepts):"
            f" with magnitude decoupling {_site(stress['optdigits_with_magnitude'])}; without"
            f" {_site(stress['optdigits_without_magnitude'])}.",
            "",
        ]
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, check in result.get("targets", {}).items():
        shown = ", ".join(_shown(k, v) for k, v in check.items() if k != "pass")
        lines.append(f"| {name} | {shown} | {'yes' if check['pass'] else 'NO'} |")
    lines += ["", *[f"![]({f})" for f in files], ""]
    notes = docs.parent / "BENCHMARKS_NOTES.md"
    if notes.is_file():
        lines += [notes.read_text()]
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text("\n".join(lines) + "\n")
