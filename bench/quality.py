"""`make bench-quality`: every run of BENCHMARK.md's comparison on Digits-4M, one seed policy.

Each trained run is `rosetta simulate` with the base config (bench/quality.toml) plus the run's
overrides, so every run has the same data, rounds, steps and model. Writes
results/quality.json and docs/BENCHMARKS.md (tables, plots, the command, wall time).

    python -m bench.quality [--base bench/quality.toml] [--out results] [--docs docs/BENCHMARKS.md]
    python -m bench.quality --tiny --dataset DIR ...   (CI: pipeline correctness, not the numbers)
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.config import ModelConfig, TrainConfig, from_mapping
from coordinator.strategy import StrategyConfig
from rosetta.baselines import fixed_baselines
from rosetta.simulate import SimulationConfig, load_federation, run

FEDAVG = {"strategy": {"rule": "fedavg", "consensus": "equal"}}
TRAINED_RUNS: dict[str, dict[str, Any]] = {
    "local_only": {"simulation": {"mode": "local_only"}},
    "fedavg_no_anchors": {**FEDAVG, "train": {"cka_weight": 0.0}},
    "prototype_sharing": {"simulation": {"peer": "prototypes"}, "train": {"cka_weight": 0.0}},
    "anchor_embedding_sharing": {
        "simulation": {"peer": "anchor_embeddings"},
        "train": {"cka_weight": 0.0},
    },
    "rosetta": {},
    "rosetta_no_cka": {"train": {"cka_weight": 0.0}},
    "rosetta_no_precision": FEDAVG,
    "rosetta_no_magnitude": {"model": {"adapter": {"magnitude": False}}},
    "rosetta_trained_a": {"model": {"adapter": {"train_a": True}}},
    "rosetta_frozen_a": {"model": {"adapter": {"train_a": False}}},
    "centralised": {"simulation": {"mode": "centralised"}},
    "centralised_supervised": {
        "simulation": {"mode": "centralised", "supervised": True},
        "train": {"supervised_weight": 1.0},
    },
}
RUN_ORDER = ("anchors_only", "anchor_relative_fixed", *TRAINED_RUNS)
TRAINING_FREE = ("anchors_only", "anchor_relative_fixed")
STRESS_RUNS: dict[str, dict[str, Any]] = {
    "precision_clean": {},
    "precision_corrupted": {"simulation": {"corrupt_nodes": ["audio-2"]}},
    "fedavg_clean": FEDAVG,
    "fedavg_corrupted": {**FEDAVG, "simulation": {"corrupt_nodes": ["audio-2"]}},
    "no_magnitude_clean": {"model": {"adapter": {"magnitude": False}}},
}


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, Mapping) else copy.deepcopy(v)
    return out


def load_base(path: Path, dataset: str | None = None, tiny: bool = False) -> dict[str, Any]:
    """The base config of every run: `path` (TOML), with the dataset and tiny overrides."""
    base = tomllib.loads(path.read_text())
    if dataset:
        base = merge(base, {"simulation": {"dataset": dataset}})
    if tiny:
        base = merge(base, TINY_OVERRIDE)
    return base


def configs(
    doc: Mapping[str, Any],
) -> tuple[SimulationConfig, StrategyConfig, ModelConfig, TrainConfig]:
    return (
        from_mapping(SimulationConfig, doc.get("simulation", {}), "simulation"),
        from_mapping(StrategyConfig, doc.get("strategy", {}), "strategy"),
        from_mapping(ModelConfig, doc.get("model", {}), "model"),
        from_mapping(TrainConfig, doc.get("train", {}), "train"),
    )


def summary(res: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("mean_map", "mean_r1", "mean_p10", "chance_map", "pairs", "wall_s", "shared_mean_map")
    out = {k: res[k] for k in keep if k in res}
    final = res.get("final", {})
    for k in ("shared_mean_map", "chance_map", "probe", "concept_cka", "anchor_cka", "sites"):
        if k in final:
            out[k] = final[k]
    rounds = res.get("rounds", [])
    if rounds and "target_concept_cka" in rounds[-1]:
        out["target_concept_cka_per_round"] = [r["target_concept_cka"] for r in rounds]
    if "bytes_per_node_per_round" in res:
        out["bytes_per_node_per_round"] = res["bytes_per_node_per_round"]
    return out


class Bench:
    def __init__(self, base: Mapping[str, Any], out: Path, log: Callable[[str], None]) -> None:
        self.base, self.out, self.log = base, out, log

    def trained(
        self, name: str, override: Mapping[str, Any], anchors: str, layout: str | None = None
    ) -> dict[str, Any]:
        doc = merge(self.base, override)
        doc = merge(
            doc,
            {"simulation": {"anchors": anchors, "out": str(self.out / "runs" / anchors / name)}},
        )
        if layout:
            doc = merge(doc, {"simulation": {"layout": layout}})
        sim, strategy, model, train = configs(doc)
        t0 = time.perf_counter()
        res = run(sim, model, train, strategy, log=lambda line: None)
        self.log(
            f"{anchors:4s} {name:26s} mean mAP {res['mean_map']:.3f}  R@1 {res['mean_r1']:.3f}  ({time.perf_counter() - t0:.0f}s)"
        )
        return summary(res)

    def fixed(self, anchors: str) -> dict[str, dict[str, Any]]:
        sim, _, model, train = configs(
            merge(self.base, {"simulation": {"anchors": anchors, "mode": "local_only"}})
        )
        fed = load_federation(sim, model, train)
        out = fixed_baselines(fed, model)
        for name, res in out.items():
            self.log(
                f"{anchors:4s} {name:26s} mean mAP {res['mean_map']:.3f}  R@1 {res['mean_r1']:.3f}"
            )
        return out

    def table(self, anchors: str, names: tuple[str, ...]) -> dict[str, Any]:
        runs: dict[str, Any] = {}
        if any(n in TRAINING_FREE for n in names):
            fixed = self.fixed(anchors)
            runs.update({n: fixed[n] for n in names if n in TRAINING_FREE})
        for n in names:
            same = self.same_as_rosetta(n)
            if same and "rosetta" in runs:  # the override changes nothing: do not train it twice
                runs[n] = {**runs["rosetta"], "same_as": "rosetta"}
                self.log(f"{anchors:4s} {n:26s} = rosetta (the override is the base config)")
            elif n in TRAINED_RUNS:
                runs[n] = self.trained(n, TRAINED_RUNS[n], anchors)
        return runs

    def same_as_rosetta(self, name: str) -> bool:
        """True when the run's override leaves the base config unchanged (e.g. trained A once
        the base trains A): its result is Rosetta's."""
        if name == "rosetta" or name not in TRAINED_RUNS:
            return False
        return configs(merge(self.base, TRAINED_RUNS[name])) == configs(self.base)

    def stress(self, anchors: str) -> dict[str, Any]:
        runs = {n: self.trained(n, o, anchors, layout="stress") for n, o in STRESS_RUNS.items()}
        drop_p = runs["precision_clean"]["mean_map"] - runs["precision_corrupted"]["mean_map"]
        drop_f = runs["fedavg_clean"]["mean_map"] - runs["fedavg_corrupted"]["mean_map"]
        site = lambda r: r.get("sites", {}).get("optdigits", {})  # noqa: E731
        return {
            "runs": runs,
            "corrupted_drop_precision": drop_p,
            "corrupted_drop_fedavg": drop_f,
            "optdigits_with_magnitude": site(runs["precision_clean"]),
            "optdigits_without_magnitude": site(runs["no_magnitude_clean"]),
        }


def targets(result: Mapping[str, Any]) -> dict[str, Any]:
    """The issue's quality targets, each with the measured values and pass/fail."""
    checks: dict[str, Any] = {}
    for key in ("runs", "runs_k50"):
        runs = result.get(key, {})
        if "rosetta" not in runs:
            continue
        r = runs["rosetta"]["mean_map"]
        best = max(
            runs[n]["mean_map"]
            for n in ("anchors_only", "anchor_relative_fixed", "local_only", "fedavg_no_anchors")
            if n in runs
        )
        checks[f"{key}: rosetta >= 1.2 x best simple baseline"] = {
            "rosetta": r,
            "best_baseline": best,
            "ratio": r / best,
            "pass": r >= 1.2 * best,
        }
        if "centralised" in runs:
            c = runs["centralised"]["mean_map"]
            checks[f"{key}: rosetta >= 0.95 x centralised"] = {
                "rosetta": r,
                "centralised": c,
                "ratio": r / c,
                "pass": r >= 0.95 * c,
            }
        if "centralised_supervised" in runs and "centralised" in runs:
            s = runs["centralised_supervised"]["mean_map"]
            base = max(
                runs[n]["mean_map"] for n in ("anchors_only", "anchor_relative_fixed") if n in runs
            )
            checks[f"{key}: aim: half the gap to the supervised ceiling"] = {
                "rosetta": r,
                "ceiling": s,
                "halfway": base + 0.5 * (s - base),
                "pass": r >= base + 0.5 * (s - base),
            }
    stress = result.get("stress")
    if stress:
        dp, df = stress["corrupted_drop_precision"], stress["corrupted_drop_fedavg"]
        checks["corrupted node: drop with precision <= 1/3 of drop with FedAvg"] = {
            "drop_precision": dp,
            "drop_fedavg": df,
            "pass": dp <= max(df, 0.0) / 3,
        }
        w, wo = stress["optdigits_with_magnitude"], stress["optdigits_without_magnitude"]
        if w and wo:
            checks["optdigits aligns better with magnitude decoupling"] = {
                "with": w,
                "without": wo,
                "pass": w["mean_map_from"] > wo["mean_map_from"],
            }
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=Path("bench/quality.toml"))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--docs", type=Path, default=Path("docs/BENCHMARKS.md"))
    parser.add_argument("--dataset", help="override simulation.dataset")
    parser.add_argument(
        "--ks",
        nargs="+",
        default=["k20", "k50", "k5"],
        help="anchor sets: table, second table, sweep-only",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny model and one round (CI)")
    parser.add_argument(
        "--render-only", action="store_true", help="re-render the docs from --out/quality.json"
    )
    args = parser.parse_args(argv)
    if args.render_only:
        from bench.quality_report import render

        render(json.loads((args.out / "quality.json").read_text()), args.docs, args.out)
        return 0
    base = load_base(args.base, args.dataset, args.tiny)
    start = time.perf_counter()
    bench = Bench(base, args.out, log=lambda line: print(line, file=sys.stderr, flush=True))
    result: dict[str, Any] = {"base_config": base, "anchor_sets": args.ks}
    result["runs"] = bench.table(args.ks[0], RUN_ORDER)
    if len(args.ks) > 1:
        result["runs_k50"] = bench.table(args.ks[1], RUN_ORDER)
    if len(args.ks) > 2:
        result["runs_k5"] = bench.table(
            args.ks[2], ("anchors_only", "anchor_relative_fixed", "rosetta")
        )
    result["stress"] = bench.stress(args.ks[0])
    result["targets"] = targets(result)
    result["wall_s"] = time.perf_counter() - start
    result["command"] = "python -m bench.quality " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(
        json.dumps(result, indent=2, sort_keys=True, default=float) + "\n"
    )
    from bench.quality_report import render

    render(result, args.docs, args.out)
    print(f"wrote {args.out / 'quality.json'} and {args.docs} in {result['wall_s']:.0f}s")
    return 0


TINY_OVERRIDE = {
    "simulation": {"rounds": 1, "max_private": 16, "max_test": 20},
    "model": {
        "device": "cpu",
        "backbone": {"dim": 32, "layers": 2, "heads": 2, "mlp_dim": 64, "pretrained": "none"},
        "adapter": {"rank": 4},
    },
    "train": {"steps": 2, "batch_size": 8, "anchors_per_step": 8},
}


if __name__ == "__main__":
    raise SystemExit(main())
