"""Local training: it learns, it aligns, and it returns only what may be sent."""

import math

import pytest
import torch

from common.alignment import anchor_gram, cka
from common.config import ModelConfig, TrainConfig
from common.partition import local_state, shared_names, shared_state
from common.pretrained import build_model
from node.training import LocalTrainer, apply_delta


def _sensor_data(n, seed):
    gen = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, 16)
    freq = torch.randint(1, 5, (n, 1), generator=gen).float()
    phase = torch.rand(n, 1, generator=gen) * 6.28
    return {"signal": torch.sin(6.28 * freq * t + phase).unsqueeze(1)}


def _trainer(modality="sensor", **train):
    cfg = ModelConfig.tiny().with_modalities(modality)
    model = build_model(cfg)
    defaults = {"steps": 20, "batch_size": 16, "lr": 1e-2, "magnitude_lr": 1e-2, "seed": 0}
    return LocalTrainer(
        model,
        modality,
        _sensor_data(96, 0),
        _sensor_data(12, 1),
        TrainConfig(**{**defaults, **train}),
    )


def test_a_short_run_lowers_the_self_supervised_loss():
    tr = _trainer(cka_weight=0.0)
    losses = [tr.step(None)["loss"] for _ in range(60)]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.1


def test_training_raises_cka_to_a_fixed_target():
    tr = _trainer(cka_weight=5.0)
    target = anchor_gram(torch.randn(12, 3, generator=torch.Generator().manual_seed(5)))
    before = float(cka(tr.current_gram(), target))
    result = None
    for _ in range(3):
        result = tr.run_round(target)
    assert result.cka > before + 0.2
    assert result.cka == pytest.approx(float(cka(tr.current_gram(), target)), abs=1e-5)


def test_round_result_holds_deltas_of_shared_parameters_only():
    tr = _trainer()
    start_shared, start_local = shared_state(tr.model), local_state(tr.model)
    result = tr.run_round(None, steps=3)
    assert set(result.delta) == set(shared_names(tr.model))
    assert set(result.precisions) == set(result.delta)
    end = shared_state(tr.model)
    assert all(torch.allclose(result.delta[k], end[k] - start_shared[k]) for k in end)
    assert any(
        not torch.equal(v, local_state(tr.model)[k]) for k, v in start_local.items()
    )  # m trained
    assert result.gram.shape == (12, 12) and torch.equal(result.gram, result.gram.T)
    assert result.node_precision > 0 and math.isnan(result.cka) and result.n_samples == 96
    assert all(float(p) > 0 for p in result.precisions.values())


def test_element_precisions_match_parameter_shapes():
    tr = _trainer(precision="element")
    result = tr.run_round(None, steps=2)
    assert all(result.precisions[k].shape == result.delta[k].shape for k in result.delta)


def test_applying_the_delta_to_a_fresh_model_reproduces_the_shared_state():
    tr = _trainer()
    result = tr.run_round(None, steps=3)
    fresh = build_model(ModelConfig.tiny().with_modalities("sensor"))
    apply_delta(fresh, result.delta)
    trained = shared_state(tr.model)
    assert all(torch.allclose(shared_state(fresh)[k], trained[k], atol=1e-6) for k in trained)


def test_supervised_term_is_used_when_labels_are_given():
    cfg = ModelConfig.tiny().with_modalities("sensor")
    tr = LocalTrainer(
        build_model(cfg),
        "sensor",
        _sensor_data(32, 0),
        _sensor_data(4, 1),
        TrainConfig(steps=2, batch_size=8, supervised_weight=1.0),
        labels=torch.arange(32) % 3,
    )
    assert "loss_supervised" in tr.run_round(None).stats


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_every_modality_trains_a_step(modality):
    cfg = ModelConfig.tiny().with_modalities(modality)
    tk = cfg.tokenizers
    make = {
        "image": lambda n: {"pixels": torch.rand(n, 1, 8, 8)},
        "audio": lambda n: {"waveform": torch.randn(n, tk.audio_samples)},
        "text": lambda n: {
            "input_ids": torch.randint(2, 100, (n, tk.text_max_tokens)),
            "attention_mask": torch.ones(n, tk.text_max_tokens, dtype=torch.long),
        },
    }[modality]
    tr = LocalTrainer(
        build_model(cfg), modality, make(16), make(6), TrainConfig(steps=2, batch_size=8)
    )
    result = tr.run_round(anchor_gram(torch.randn(6, 2)))
    assert math.isfinite(result.loss) and 0.0 <= result.cka <= 1.0 + 1e-6


def test_bad_inputs_are_rejected_with_clear_messages():
    cfg = ModelConfig.tiny().with_modalities("sensor")
    model = build_model(cfg)
    with pytest.raises(ValueError, match="empty"):
        LocalTrainer(
            model, "sensor", {"signal": torch.zeros(0, 1, 16)}, _sensor_data(4, 1), TrainConfig()
        )
    with pytest.raises(ValueError, match="labels"):
        LocalTrainer(
            model,
            "sensor",
            _sensor_data(8, 0),
            _sensor_data(4, 1),
            TrainConfig(),
            labels=torch.zeros(3),
        )
    with pytest.raises(ValueError, match="at least 2 anchors"):
        LocalTrainer(model, "sensor", _sensor_data(8, 0), _sensor_data(1, 1), TrainConfig())
    tr = LocalTrainer(model, "sensor", _sensor_data(8, 0), _sensor_data(4, 1), TrainConfig())
    with pytest.raises(ValueError, match="target gram"):
        tr.run_round(torch.eye(5))
    with pytest.raises(ValueError, match="not shared"):
        apply_delta(model, {"backbone.word_embeddings.weight": torch.zeros(1)})


def test_a_node_with_corrupted_data_reports_lower_coverage_and_precision():
    """Noise instead of signals: low anchor coverage, and the node's precisions are those of
    an effective sample count n * coverage**power (same training, factor on vs off)."""
    gen = torch.Generator().manual_seed(9)
    noise = {"signal": 5.0 * torch.randn(96, 1, 16, generator=gen)}
    clean = _trainer().run_round(None, steps=5)
    runs = {}
    for power in (0.0, 4.0):
        tr = _trainer(coverage_power=power, fisher_prior=0.0)
        tr.data = noise
        runs[power] = tr.run_round(None, steps=5)
    c = runs[4.0].stats["coverage"]
    assert c < 0.8 * clean.stats["coverage"] and runs[0.0].stats["coverage"] == 1.0
    assert runs[4.0].node_precision == pytest.approx(runs[0.0].node_precision * c**4, rel=1e-4)
    for name, p in runs[4.0].precisions.items():
        assert float(p) == pytest.approx(float(runs[0.0].precisions[name]) * c**4, rel=1e-4)
