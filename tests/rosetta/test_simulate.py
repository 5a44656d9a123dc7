"""rosetta simulate end to end on the tiny Digits-4M build: real data format, real training."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = """
[model]
device = "cpu"
[model.backbone]
dim = 32
layers = 2
heads = 2
mlp_dim = 64
pretrained = "none"
[model.adapter]
rank = 4
[train]
steps = 2
batch_size = 8
anchors_per_step = 8
"""


def _config(tmp_path, dataset, **sim):
    values = {
        "dataset": str(dataset),
        "anchors": "k3",
        "rounds": 2,
        "max_private": 16,
        "max_test": 20,
        **sim,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / "sim.toml"
    path.write_text("[simulation]\n" + "\n".join(lines) + "\n" + TINY_MODEL)
    return path


def _simulate(config, out):
    return subprocess.run(
        [sys.executable, "-m", "rosetta.cli", "simulate", "--config", str(config), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip


def test_federated_simulation_writes_results_and_plots(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = _simulate(_config(tmp_path, tiny_dataset, layout="full", eval_every=1), out)
    assert result.returncode == 0, result.stderr
    res = json.loads((out / "results.json").read_text())
    assert len(res["rounds"]) == 2 and (out / "results.png").stat().st_size > 10_000
    assert len(res["pairs"]) == 12 and 0.0 <= res["mean_map"] <= 1.0
    assert "eval" in res["rounds"][0] and "target_concept_cka" in res["rounds"][1]
    assert (
        set(res["bytes_per_node_per_round"]) == set(res["nodes"])
        and "optdigits" in res["final"]["sites"]
    )
    for node in res["bytes_per_node_per_round"].values():
        assert node["up"] > 0 and node["down"] > 0
    assert len((out / "rounds.jsonl").read_text().splitlines()) == 2


def test_evaluate_on_the_exported_model_reproduces_the_simulation(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    # capped test sets: evaluate draws the same seeded subsets as the simulation
    assert _simulate(_config(tmp_path, tiny_dataset, rounds=1, max_test=12), out).returncode == 0
    res = json.loads((out / "results.json").read_text())
    model = out / "model"
    assert (model / "model.json").is_file() and len(list((model / "sites").iterdir())) == 4
    ev = subprocess.run(
        [sys.executable, "-m", "rosetta.cli", "evaluate", "--model", str(model), "--max-test", "12",
         "--out", str(tmp_path / "ev.json")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads((tmp_path / "ev.json").read_text())
    assert metrics["mean_map"] == pytest.approx(res["mean_map"], abs=1e-6)
    assert metrics["pairs"].keys() == res["pairs"].keys()
    (model / "shared.safetensors").write_bytes(b"tampered")
    bad = subprocess.run(
        [sys.executable, "-m", "rosetta.cli", "evaluate", "--model", str(model)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 2 and "content hash does not match" in bad.stderr


def test_local_only_mode_sends_nothing_down(tiny_dataset, tmp_path):
    out = tmp_path / "local"
    result = _simulate(
        _config(tmp_path, tiny_dataset, mode="local_only", corrupt_nodes=["audio"]), out
    )
    assert result.returncode == 0, result.stderr
    res = json.loads((out / "results.json").read_text())
    assert all(n["down"] == 0 for n in res["bytes_per_node_per_round"].values())
    assert "target_concept_cka" not in res["rounds"][0]


@pytest.mark.parametrize(
    ("sim", "message"),
    [
        ({"mode": "solo"}, "simulation.mode"),
        ({"layout": "nope"}, "no layout 'nope'"),
        ({"corrupt_nodes": ["ghost"]}, "unknown nodes"),
    ],
)
def test_bad_simulation_config_is_one_line_exit_2(tiny_dataset, tmp_path, sim, message):
    result = _simulate(_config(tmp_path, tiny_dataset, **sim), tmp_path / "x")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert message in result.stderr


@pytest.mark.parametrize(
    "sim",
    [
        {"mode": "centralised"},
        {"mode": "centralised", "supervised": True},
        {"peer": "anchor_embeddings"},
        {"peer": "prototypes"},
    ],
)
def test_benchmark_variants_run_on_the_same_code(tiny_dataset, tmp_path, sim):
    out = tmp_path / "variant"
    result = _simulate(_config(tmp_path, tiny_dataset, rounds=1, **sim), out)
    assert result.returncode == 0, result.stderr
    res = json.loads((out / "results.json").read_text())
    assert 0.0 <= res["mean_map"] <= 1.0 and len(res["pairs"]) == 12
    if sim.get("mode") == "centralised":
        assert all(v["up"] == 0 for v in res["bytes_per_node_per_round"].values())
        assert set(res["nodes"]) == {"image", "audio", "text", "sensor"}
    if "peer" in sim:  # a peer sends an N x d table on top of Rosetta's payload
        assert all(v["up"] > 4 * 30 * 32 for v in res["bytes_per_node_per_round"].values())
