"""The coordinator's round rule: hand-computed updates, per-modality tokenizers, bad uploads."""

import pytest
import torch

from common.alignment import anchor_gram, cka
from coordinator.strategy import RoundAggregate, StrategyConfig, Upload

B = "backbone.layers.0.attn.q.lora_b"
TI = "tokenizers.image.proj.weight"
TA = "tokenizers.audio.proj.weight"


def _gram(seed, n=6):
    return anchor_gram(
        torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ).float()


def _up(node, modality, b, tok, pi=1.0, w=1.0, n=10, gram=None):
    key = TI if modality == "image" else TA
    delta = {B: torch.tensor([b]), key: torch.tensor([tok])}
    return Upload(
        node,
        modality,
        delta,
        {k: torch.tensor(pi) for k in delta},
        w,
        gram if gram is not None else _gram(0),
        n,
    )


STATE = {B: torch.tensor([10.0]), TI: torch.tensor([0.0]), TA: torch.tensor([100.0])}


def test_precision_rule_hand_computed():
    agg = RoundAggregate(StrategyConfig(consensus="equal", target_smoothing=0.0))
    agg.add(_up("a", "image", 1.0, 5.0, pi=1.0))
    agg.add(_up("b", "audio", 4.0, 7.0, pi=3.0))
    state, _, omega = agg.finish(STATE, None)
    assert torch.allclose(state[B], torch.tensor([10.0 + 3.25]))  # (1*1 + 3*4) / 4
    assert torch.allclose(state[TI], torch.tensor([5.0]))  # image tokenizer: image nodes only
    assert torch.allclose(state[TA], torch.tensor([107.0]))
    assert omega == {"audio": 0.5, "image": 0.5}
    assert torch.equal(STATE[B], torch.tensor([10.0]))  # input not mutated


def test_backbone_lr_scales_only_the_shared_backbone_step():
    cfg = StrategyConfig(consensus="equal", target_smoothing=0.0, backbone_lr=2.0, server_lr=1.5)
    agg = RoundAggregate(cfg)
    agg.add(_up("a", "image", 1.0, 5.0, pi=1.0))
    agg.add(_up("b", "audio", 4.0, 7.0, pi=3.0))
    state, _, _ = agg.finish(STATE, None)
    assert torch.allclose(state[B], torch.tensor([10.0 + 1.5 * 2.0 * 3.25]))
    assert torch.allclose(state[TI], torch.tensor([1.5 * 5.0]))  # tokenizers: server_lr only
    assert torch.allclose(state[TA], torch.tensor([100.0 + 1.5 * 7.0]))


def test_fedavg_rule_weights_by_sample_count():
    agg = RoundAggregate(StrategyConfig(rule="fedavg"))
    agg.add(_up("a", "image", 0.0, 0.0, pi=100.0, n=30))
    agg.add(_up("b", "image", 8.0, 4.0, pi=1.0, n=10))
    state, _, _ = agg.finish(STATE, None)
    assert torch.allclose(state[B], torch.tensor([12.0])) and torch.allclose(
        state[TI], torch.tensor([1.0])
    )


def test_identical_grams_give_that_gram_as_target_without_denoising():
    g = _gram(3)
    agg = RoundAggregate(StrategyConfig(knn=-1))
    agg.add(_up("a", "image", 0.0, 0.0, gram=g))
    agg.add(_up("b", "audio", 0.0, 0.0, gram=g))
    _, target, _ = agg.finish(STATE, None)
    assert float(cka(target, g)) == pytest.approx(1.0, abs=1e-6)
    denoised = RoundAggregate(StrategyConfig())
    denoised.add(_up("a", "image", 0.0, 0.0, gram=g))
    _, target, _ = denoised.finish(STATE, None)
    assert 0.7 < float(cka(target, g)) < 1.0


def test_agreement_weights_trust_the_modalities_that_agree():
    shared = _gram(1)
    agg = RoundAggregate(StrategyConfig(consensus="agreement"))
    for i, m in enumerate(["image", "audio"]):
        agg.add(_up(f"n{i}", m, 0.0, 0.0, gram=shared))
    agg.add(
        Upload("odd", "text", {B: torch.tensor([0.0])}, {B: torch.tensor(1.0)}, 1.0, _gram(9), 5)
    )
    _, _, omega = agg.finish(STATE, None)
    assert omega["text"] < omega["image"] and omega["image"] == pytest.approx(omega["audio"])


def test_target_smoothing_moves_part_way():
    old, new = _gram(1), _gram(2)
    agg = RoundAggregate(StrategyConfig(target_smoothing=0.5, consensus="equal"))
    agg.add(_up("a", "image", 0.0, 0.0, gram=new))
    _, target, _ = agg.finish(STATE, old)
    assert 0.3 < float(cka(target, old)) < 1.0 and 0.3 < float(cka(target, new)) < 1.0
    assert float(target.norm()) == pytest.approx(1.0, abs=1e-5) and torch.equal(target, target.T)


def test_bad_uploads_are_rejected_and_change_nothing():
    agg = RoundAggregate(StrategyConfig())
    agg.add(_up("a", "image", 1.0, 1.0))
    with pytest.raises(ValueError, match="already uploaded"):
        agg.add(_up("a", "image", 1.0, 1.0))
    with pytest.raises(ValueError, match="another modality's tokenizer"):
        agg.add(
            Upload(
                "b", "audio", {TI: torch.tensor([1.0])}, {TI: torch.tensor(1.0)}, 1.0, _gram(0), 5
            )
        )
    with pytest.raises(ValueError, match="expected 6"):
        agg.add(_up("c", "image", 1.0, 1.0, gram=_gram(0, n=5)))
    bad = _up("d", "image", 1.0, 1.0)
    bad.delta[TI][0] = float("nan")  # backbone part is fine, tokenizer part is not
    with pytest.raises(ValueError, match="non-finite"):
        agg.add(bad)
    with pytest.raises(ValueError, match="sample count"):
        agg.add(_up("e", "image", 1.0, 1.0, n=0))
    assert agg.nodes == ["a"] and agg.backbone.count == 1 and agg.tokenizers["image"].count == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "median"}, "rule"),
        ({"consensus": "vote"}, "consensus"),
        ({"target_smoothing": 1.0}, "smoothing"),
        ({"server_lr": 0.0}, "server_lr"),
        ({"backbone_lr": -1.0}, "backbone_lr"),
        ({"agreement_power": 0.0}, "agreement_power"),
        ({"fusion": "median"}, "fusion"),
    ],
)
def test_bad_strategy_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StrategyConfig(**kwargs)


def test_consistency_weighting_discounts_a_site_that_disagrees_with_the_consensus():
    reference = _gram(1)
    agg = RoundAggregate(
        StrategyConfig(consistency_power=2.0, consensus="equal"), reference=reference
    )
    agg.add(_up("clean", "image", 1.0, 0.0, pi=1.0, gram=reference))
    agg.add(_up("noisy", "image", 9.0, 0.0, pi=1.0, gram=_gram(7)))
    state, _, _ = agg.finish(STATE, reference)
    assert (
        agg.consistency["clean"] == pytest.approx(1.0, abs=1e-6) and agg.consistency["noisy"] < 0.5
    )
    plain = RoundAggregate(StrategyConfig(consensus="equal"), reference=reference)
    plain.add(_up("clean", "image", 1.0, 0.0, pi=1.0, gram=reference))
    plain.add(_up("noisy", "image", 9.0, 0.0, pi=1.0, gram=_gram(7)))
    plain_state, _, _ = plain.finish(STATE, reference)
    assert float(state[B] - 10.0) < float(plain_state[B] - 10.0)  # the noisy site pulls less


def test_snf_fusion_gives_a_normalised_target_close_to_grams_the_modalities_share():
    g = _gram(3, n=12)
    agg = RoundAggregate(StrategyConfig(fusion="snf", knn=3))
    agg.add(_up("a", "image", 0.0, 0.0, gram=g))
    agg.add(_up("b", "audio", 0.0, 0.0, gram=g))
    _, target, _ = agg.finish(STATE, None)
    assert float(target.double().norm()) == pytest.approx(1.0, abs=1e-5)
    assert float(cka(target, g)) > 0.7
