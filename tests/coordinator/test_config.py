"""Daemon configs: the examples in deploy/ load, mistakes are one line naming the file."""

from pathlib import Path

import pytest

from common.daemon import ConfigError
from coordinator.config import load_coordinator_config
from node.config import load_node_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_deploy_examples_load():
    c = load_coordinator_config(DEPLOY / "coordinator.toml")
    assert c.nodes["hospital-a"] == "image" and c.federation.rounds == 10
    assert str(c.export_dir) == "/var/lib/rosetta/coordinator/model"
    n = load_node_config(DEPLOY / "node.toml")
    assert n.node.name == "hospital-a" and n.tls.key.endswith("hospital-a.key")


def _write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


BASE = '[coordinator]\nanchors = "anchors"\n[nodes]\na = "image"\nb = "text"\n'


def test_relative_paths_are_relative_to_the_file(tmp_path):
    cfg = load_coordinator_config(_write(tmp_path, BASE))
    assert cfg.coordinator.anchors == str(tmp_path.resolve() / "anchors")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "[federation]\nrounds_total = 3\n", "unknown config key 'federation.rounds_total'"),
        (BASE + "[extra]\n", "unknown table"),
        ('[coordinator]\nanchors = "x"\n', "must admit at least one node"),
        ('[coordinator]\n[nodes]\na = "image"\nb = "text"\n', "coordinator.anchors"),
        (BASE.replace('"image"', '"smell"'), "modality 'smell'"),
        (BASE + "[federation]\nmin_nodes = 3\n", "exceeds the 2 admitted nodes"),
        ("[coordinator\n", "invalid TOML"),
    ],
)
def test_mistakes_are_one_line_naming_the_file(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_coordinator_config(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_node_needs_its_name_data_and_anchors(tmp_path):
    with pytest.raises(ConfigError, match=r"node\.name is required"):
        load_node_config(_write(tmp_path, '[node]\ndata = "d"\nanchors = "a"\n'))
