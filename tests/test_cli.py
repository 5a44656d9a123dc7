"""The rosetta CLI: info on a real config file; bad config is one line and exit code 2."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "rosetta.cli", *args], capture_output=True, text=True, cwd=REPO
    )


def test_info_reports_the_layout_of_a_tiny_config(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        '[model]\nmodalities = ["image", "sensor"]\ndevice = "cpu"\n'
        "[model.backbone]\ndim = 32\nlayers = 2\nheads = 2\nmlp_dim = 64\nmax_positions = 64\n"
        'vocab_size = 200\npretrained = "none"\n[model.adapter]\nrank = 4\n[train]\nsteps = 3\n'
    )
    result = _run("info", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["train"]["steps"] == 3 and out["model"]["modalities"] == ["image", "sensor"]
    layout = out["layout"]
    # magnitudes: per block q, k, v, o, mlp_out have d rows and mlp_in has mlp_dim rows
    assert layout["local_parameters"] == 2 * (5 * 32 + 64)
    # B factors (d_out x rank) and, trained by default, A factors (rank x d_in); each sums to
    # rank x (5 * 32 + 64) per block here
    assert layout["shared_backbone_parameters"] == 2 * (2 * 4 * (5 * 32 + 64))
    assert set(layout["delta_bytes_per_node_per_round"]) == {"image", "sensor"}


def test_info_on_the_example_config_is_valid():
    result = _run("info", "--config", str(REPO / "deploy" / "model.example.toml"))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    layout = out["layout"]
    assert layout["local_parameters"] > 0 and layout["shared_backbone_parameters"] > 0
    assert set(layout["delta_bytes_per_node_per_round"]) == {"image", "audio", "text", "sensor"}


def test_bad_config_is_one_line_and_exit_code_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model.adapter]\nrank = 0\n")
    result = _run("info", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "adapter.rank must be positive" in result.stderr
    missing = _run("info", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "no such config file" in missing.stderr


def test_data_check_reports_a_corrupt_payload_in_one_line(tmp_path):
    from common.dataformat import Samples, write_data_folder

    write_data_folder(tmp_path / "site", Samples("text", {}, ("one", "two")))
    ok = _run("data", "check", str(tmp_path / "site"))
    assert ok.returncode == 0 and "text, 2 samples" in ok.stdout
    with (tmp_path / "site" / "text.jsonl").open("a") as f:
        f.write('{"text": "three"}\n')
    bad = _run("data", "check", str(tmp_path / "site"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "text.jsonl: content hash does not match" in bad.stderr


def _coordinator_config(tmp_path, pki, tiny_dataset, key):
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(
        f'[coordinator]\nlisten = "127.0.0.1:0"\nmetrics_listen = ""\nanchors = "{tiny_dataset}/anchors/k3"\n'
        f'state_dir = "{tmp_path}/state"\n'
        f'[tls]\nca = "{pki}/ca/ca.crt"\ncert = "{pki}/coordinator/coordinator.crt"\nkey = "{key}"\n'
        '[nodes]\nimage = "image"\ntext = "text"\n'
    )
    return cfg


def test_daemons_refuse_exposed_or_missing_keys_with_exit_3(tmp_path, pki, tiny_dataset):
    exposed = tmp_path / "exposed.key"
    exposed.write_bytes((pki / "coordinator" / "coordinator.key").read_bytes())
    exposed.chmod(0o644)
    for key, message in ((exposed, "other users"), (tmp_path / "none.key", "missing")):
        result = _run(
            "coordinator", "--config", str(_coordinator_config(tmp_path, pki, tiny_dataset, key))
        )
        assert result.returncode == 3, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was written


def test_daemon_config_errors_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "node.toml"
    bad.write_text('[node]\nname = "a"\ndata = "d"\nanchors = "x"\npoll_s = 0\n')
    result = _run("node", "--config", str(bad))
    assert result.returncode == 2 and "node.poll_s must be positive" in result.stderr
    assert result.stderr.count("\n") == 1
    result = _run("coordinator", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "no such config file" in result.stderr
