"""Adapters: exact identity at init, the parameter split, ablation switches."""

import dataclasses

import pytest
import torch

from common.adapters import AdaptedLinear, FrozenLinear, attach_adapters
from common.config import AdapterConfig, ModelConfig
from common.partition import frozen_names, local_names, shared_names, shared_state
from common.pretrained import build_model
from common.subspace import shared_basis


def _inputs(cfg, n=3):
    gen = torch.Generator().manual_seed(0)
    tk = cfg.tokenizers
    return {
        "image": {"pixels": torch.rand(n, 1, tk.image_size, tk.image_size, generator=gen)},
        "audio": {"waveform": torch.randn(n, tk.audio_samples, generator=gen)},
        "text": {
            "input_ids": torch.randint(
                2, cfg.backbone.vocab_size, (n, tk.text_max_tokens), generator=gen
            ),
            "attention_mask": torch.ones(n, tk.text_max_tokens, dtype=torch.long),
        },
        "sensor": {"signal": torch.randn(n, 1, tk.sensor_length, generator=gen)},
    }


def _pair(cfg):
    torch.manual_seed(0)
    adapted = build_model(cfg)
    torch.manual_seed(0)
    frozen = build_model(cfg, adapters=False)
    return adapted, frozen


@pytest.mark.parametrize("modality", ["image", "audio", "text", "sensor"])
def test_adapted_model_equals_frozen_backbone_exactly_at_init(modality):
    cfg = ModelConfig.tiny()
    adapted, frozen = _pair(cfg)
    x = _inputs(cfg)[modality]
    with torch.no_grad():
        assert torch.equal(adapted(modality, x), frozen(modality, x))


def test_requires_grad_is_exactly_shared_plus_local():
    model = build_model(ModelConfig.tiny())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(shared_names(model)) | set(local_names(model))
    assert not trainable & set(frozen_names(model))


def test_magnitudes_never_appear_in_the_shared_state():
    model = build_model(ModelConfig.tiny())
    assert local_names(model) and all(n.endswith(".magnitude") for n in local_names(model))
    assert not any("magnitude" in n for n in shared_state(model))


def test_every_target_layer_of_every_block_is_adapted():
    cfg = ModelConfig.tiny()
    model = build_model(cfg)
    adapted = [n for n, m in model.named_modules() if isinstance(m, AdaptedLinear)]
    assert len(adapted) == cfg.backbone.layers * 6
    assert not any(
        isinstance(m, FrozenLinear) and not isinstance(m, AdaptedLinear) for m in model.modules()
    )


def test_basis_is_the_shared_basis_of_the_layer_name():
    cfg = ModelConfig.tiny()
    model = build_model(cfg)
    layer = model.get_submodule("backbone.layers.1.attn.v")
    expected = shared_basis(
        cfg.seed, "backbone.layers.1.attn.v", cfg.adapter.rank, cfg.backbone.dim
    )
    assert torch.equal(layer.lora_a, expected)


def test_plain_lora_ablation_has_no_magnitudes():
    cfg = dataclasses.replace(ModelConfig.tiny(), adapter=AdapterConfig(rank=4, magnitude=False))
    model = build_model(cfg)
    assert local_names(model) == []


def test_trained_a_ablation_shares_a():
    cfg = dataclasses.replace(ModelConfig.tiny(), adapter=AdapterConfig(rank=4, train_a=True))
    model = build_model(cfg)
    names = shared_names(model)
    assert any(n.endswith(".lora_a") for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(names) | set(local_names(model))


def test_magnitude_sets_row_norms_and_b_moves_only_direction():
    base = FrozenLinear(6, 4)
    layer = AdaptedLinear(base, shared_basis(0, "l", 2, 6), AdapterConfig(rank=2))
    with torch.no_grad():
        layer.lora_b.normal_()
        layer.magnitude.fill_(2.0)
    assert torch.allclose(layer.merged_weight().norm(dim=1), torch.full((4,), 2.0), atol=1e-6)


def test_attach_adapters_rejects_targets_that_match_nothing():
    with pytest.raises(ValueError, match="no layer matched"):
        attach_adapters(torch.nn.Sequential(torch.nn.Linear(2, 2)), AdapterConfig(), seed=0)


def test_pretrained_minilm_with_adapters_equals_it_exactly_at_init():
    from common.pretrained import WordPieceTokenizer

    cfg = ModelConfig(device="cpu").with_modalities("text", "sensor")
    adapted, frozen = build_model(cfg), build_model(cfg, adapters=False)
    text = WordPieceTokenizer(cfg.tokenizers.text_max_tokens)(["a handwritten seven", "drei"])
    signal = {"signal": torch.randn(2, 1, cfg.tokenizers.sensor_length)}
    with torch.no_grad():
        assert torch.equal(adapted("text", text), frozen("text", text))
        assert torch.equal(adapted("sensor", signal), frozen("sensor", signal))
