"""Config dataclasses: frozen, validated, loaded from TOML-shaped tables."""

import dataclasses
import tomllib

import pytest

from common.config import (
    AdapterConfig,
    BackboneConfig,
    ModelConfig,
    TokenizerConfig,
    TrainConfig,
    from_mapping,
)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().seed = 3  # type: ignore[misc]


def test_from_toml_nested_tables_and_arrays():
    doc = tomllib.loads(
        """
        seed = 7
        modalities = ["image", "text"]
        [adapter]
        rank = 4
        targets = ["q", "v"]
        [backbone]
        pretrained = "all-minilm-l6-v2"
        """
    )
    cfg = from_mapping(ModelConfig, doc)
    assert cfg.seed == 7 and cfg.modalities == ("image", "text")
    assert cfg.adapter == AdapterConfig(rank=4, targets=("q", "v"))


def test_unknown_key_names_its_path():
    with pytest.raises(ValueError, match=r"adapter\.rnak"):
        from_mapping(ModelConfig, {"adapter": {"rnak": 3}})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BackboneConfig(dim=30, heads=4), "divisible"),
        (lambda: BackboneConfig(pretrained="gpt5"), "pretrained"),
        (lambda: AdapterConfig(rank=0), "rank"),
        (lambda: AdapterConfig(targets=("q", "ffn")), "targets"),
        (lambda: TokenizerConfig(image_size=30, image_patch=7), "multiple"),
        (lambda: ModelConfig(modalities=("smell",)), "modalities"),
        (lambda: ModelConfig(device="tpu"), "device"),
        (lambda: TrainConfig(batch_size=1), "batch_size"),
        (lambda: TrainConfig(cka_weight=-1.0), "cka_weight"),
        (lambda: TrainConfig(precision="row"), "precision"),
        (lambda: TrainConfig(anchors_per_step=1), "anchors_per_step"),
    ],
)
def test_bad_config_raises_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()
