"""bench-quality end to end at tiny scale: every run of the table is produced (not the numbers)."""

import json
import subprocess
import sys
from pathlib import Path

from bench.quality import RUN_ORDER, STRESS_RUNS

REPO = Path(__file__).resolve().parents[2]


def test_tiny_bench_quality_writes_every_run_and_the_report(tiny_dataset, tmp_path):
    out, docs = tmp_path / "results", tmp_path / "docs" / "BENCHMARKS.md"
    cmd = [sys.executable, "-m", "bench.quality", "--tiny", "--dataset", str(tiny_dataset), "--ks", "k3", "k2",
           "--out", str(out), "--docs", str(docs)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    quality = json.loads((out / "quality.json").read_text())
    for key in ("runs", "runs_k50"):
        assert set(quality[key]) == set(RUN_ORDER)
        for run in quality[key].values():
            assert 0.0 <= run["mean_map"] <= 1.0 and 0.0 <= run["mean_r1"] <= 1.0
            assert set(run["pairs"]) == {
                f"{a}->{b}"
                for a in ("audio", "image", "sensor", "text")
                for b in ("audio", "image", "sensor", "text")
                if a != b
            }
            assert all({"map", "r1", "p10"} <= set(p) for p in run["pairs"].values())
    # the base trains A, so that "ablation" is Rosetta itself and is not trained twice
    assert quality["runs"]["rosetta_trained_a"]["same_as"] == "rosetta"
    assert "same_as" not in quality["runs"]["rosetta_frozen_a"]
    assert set(quality["stress"]["runs"]) == set(STRESS_RUNS)
    assert quality["targets"] and all("pass" in t for t in quality["targets"].values())
    text = docs.read_text()
    assert (
        "k = 20 anchors per class" in text
        and "`rosetta`" in text
        and (docs.parent / "img" / "quality_runs.png").is_file()
    )


def test_tiny_bench_seeds_writes_a_row_per_seed_and_the_means(tiny_dataset, tmp_path):
    out, docs = tmp_path / "results", tmp_path / "BENCHMARKS_SEEDS.md"
    cmd = [sys.executable, "-m", "bench.seeds", "--tiny", "--dataset", str(tiny_dataset), "--ks", "k3",
           "--seeds", "1", "2", "--out", str(out), "--docs", str(docs),
           "--with-recorded", str(tmp_path / "none.json")]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "seeds.json").read_text())["by_anchors"]["k3"]
    assert set(rows) == {"1", "2"}
    for r in rows.values():
        assert r["ratio_to_centralised"] == r["rosetta"] / r["centralised"]
    assert "| mean |" in docs.read_text()
