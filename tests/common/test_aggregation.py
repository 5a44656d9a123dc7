"""Aggregation rules: hand-computed cases, symmetries, and every ValueError path."""

import pytest
import torch

from common.aggregation import (
    PrecisionWeightedSum,
    consensus_gram,
    fedavg_mean,
    precision_weighted_mean,
)
from common.alignment import anchor_gram, cka


def _deltas(k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        {"b": torch.randn(4, 2, generator=gen), "t": torch.randn(3, generator=gen)}
        for _ in range(k)
    ]


def test_hand_computed_two_node_case():
    d = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([4.0, 2.0])}]
    p = [{"w": 1.0}, {"w": 3.0}]
    # (1*1 + 3*4) / 4 = 3.25 and (0 + 3*2) / 4 = 1.5
    assert torch.allclose(precision_weighted_mean(d, p)["w"], torch.tensor([3.25, 1.5]))


def test_hand_computed_per_element_precisions():
    d = [{"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([3.0, 3.0])}]
    p = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([1.0, 2.0])}]
    assert torch.allclose(precision_weighted_mean(d, p)["w"], torch.tensor([2.0, 3.0]))


def test_equal_precisions_give_the_plain_mean():
    d = _deltas()
    out = precision_weighted_mean(d, [{"b": 2.5, "t": 2.5}] * 3)
    for k in ("b", "t"):
        assert torch.allclose(out[k], torch.stack([x[k] for x in d]).mean(0), atol=1e-6)


def test_node_order_does_not_matter():
    d = _deltas()
    p = [{"b": 1.0, "t": 5.0}, {"b": 2.0, "t": 1.0}, {"b": 7.0, "t": 0.5}]
    a = precision_weighted_mean(d, p)
    b = precision_weighted_mean(d[::-1], p[::-1])
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_vanishing_precision_has_vanishing_influence():
    d = _deltas()
    d[2] = {"b": d[2]["b"] * 1e6, "t": d[2]["t"] * 1e6}
    out = precision_weighted_mean(
        d, [{"b": 1.0, "t": 1.0}, {"b": 1.0, "t": 1.0}, {"b": 1e-12, "t": 1e-12}]
    )
    expected = precision_weighted_mean(d[:2], [{"b": 1.0, "t": 1.0}] * 2)
    assert all(torch.allclose(out[k], expected[k], atol=1e-4) for k in out)


def test_all_zero_precision_gives_zero_update():
    out = precision_weighted_mean(_deltas(2), [{"b": 0.0, "t": 0.0}] * 2)
    assert all(torch.count_nonzero(v) == 0 for v in out.values())


def test_fedavg_weights_by_sample_count():
    d = [{"w": torch.tensor([0.0])}, {"w": torch.tensor([10.0])}]
    assert torch.allclose(fedavg_mean(d, [30, 10])["w"], torch.tensor([2.5]))


def test_streaming_sum_does_not_mutate_inputs():
    d = _deltas(2)
    copies = [{k: v.clone() for k, v in x.items()} for x in d]
    acc = PrecisionWeightedSum()
    for x in d:
        acc.add(x, {"b": 2.0, "t": 3.0})
    acc.mean()
    assert all(torch.equal(d[i][k], copies[i][k]) for i in range(2) for k in d[i])


def test_a_rejected_upload_leaves_the_sum_unchanged():
    acc = PrecisionWeightedSum()
    acc.add({"a": torch.ones(2), "b": torch.ones(2)}, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="non-finite"):
        acc.add(
            {"a": torch.full((2,), 5.0), "b": torch.tensor([1.0, float("nan")])},
            {"a": 1.0, "b": 1.0},
        )
    assert acc.count == 1 and torch.equal(acc.mean()["a"], torch.ones(2))


@pytest.mark.parametrize(
    ("deltas", "precisions", "message"),
    [
        ([], [], "no deltas"),
        ([{"w": torch.ones(2)}], [], "precision sets"),
        ([{"w": torch.ones(2)}], [{"w": -1.0}], "negative"),
        ([{"w": torch.ones(2)}], [{"w": float("nan")}], "non-finite"),
        ([{"w": torch.tensor([float("inf"), 0.0])}], [{"w": 1.0}], "non-finite"),
        ([{"w": torch.ones(2)}], [{"v": 1.0}], "keys differ"),
        ([{"w": torch.ones(2)}, {"w": torch.ones(3)}], [{"w": 1.0}] * 2, "shape"),
        (
            [{"w": torch.ones(2)}, {"v": torch.ones(2)}],
            [{"w": 1.0}, {"v": 1.0}],
            "differ between nodes",
        ),
        ([{"w": torch.ones(2)}], [{"w": torch.ones(3)}], "expected a scalar"),
        ([{}], [{}], "empty"),
    ],
)
def test_bad_aggregation_input_raises(deltas, precisions, message):
    with pytest.raises(ValueError, match=message):
        precision_weighted_mean(deltas, precisions)


def test_fedavg_rejects_non_positive_counts():
    with pytest.raises(ValueError, match="positive"):
        fedavg_mean([{"w": torch.ones(1)}], [0])


def _grams(seeds, n=8):
    return [
        anchor_gram(
            torch.randn(n, 3, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
        )
        for s in seeds
    ]


def test_consensus_of_identical_grams_is_that_gram():
    g = _grams([0])[0]
    t = consensus_gram([g, g, g], [1.0, 2.0, 3.0], ["image", "audio", "audio"])
    assert torch.allclose(t, g, atol=1e-12)


def test_consensus_balances_modalities_not_nodes():
    a, b = _grams([0, 1])
    many_audio = consensus_gram(
        [a, b, b, b], [1.0, 1.0, 1.0, 1.0], ["image", "audio", "audio", "audio"]
    )
    one_each = consensus_gram([a, b], [1.0, 1.0], ["image", "audio"])
    assert torch.allclose(many_audio, one_each, atol=1e-12)


def test_consensus_hand_computed_two_modalities():
    a, b, c = _grams([0, 1, 2])
    # image: (1 a + 3 b) / 4 ; audio: c ; omega 2 : 1
    t = consensus_gram(
        [a, b, c], [1.0, 3.0, 5.0], ["image", "image", "audio"], {"image": 2.0, "audio": 1.0}
    )
    raw = 2.0 * (0.25 * a + 0.75 * b) + c
    from common.alignment import center_gram, normalise_gram

    assert torch.allclose(t, normalise_gram(center_gram(raw)), atol=1e-12)


def test_consensus_is_order_invariant_and_normalised():
    g = _grams([0, 1, 2, 3])
    mods = ["image", "audio", "text", "image"]
    w = [1.0, 2.0, 0.5, 4.0]
    t1 = consensus_gram(g, w, mods)
    t2 = consensus_gram(g[::-1], w[::-1], mods[::-1])
    assert torch.allclose(t1, t2, atol=1e-12)
    assert float(t1.norm()) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(t1.sum(1), torch.zeros(8, dtype=t1.dtype), atol=1e-12)


def test_zero_weight_node_has_no_influence_on_consensus():
    a, b, c = _grams([0, 1, 2])
    with_c = consensus_gram([a, b, c], [1.0, 1.0, 0.0], ["image", "audio", "audio"])
    without = consensus_gram([a, b], [1.0, 1.0], ["image", "audio"])
    assert float(cka(with_c, without)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("grams", "weights", "mods", "message"),
    [
        ([], [], [], "no grams"),
        ([torch.eye(3)], [1.0, 2.0], ["image"], "weights"),
        ([torch.eye(3), torch.eye(4)], [1.0, 1.0], ["image", "audio"], "expected N=3"),
        ([torch.ones(3, 2)], [1.0], ["image"], "square"),
        ([torch.eye(3)], [-1.0], ["image"], "negative"),
        ([torch.eye(3)], [0.0], ["image"], "all node and modality weights are zero"),
        ([torch.tensor([[0.0, 1.0], [0.0, 0.0]])], [1.0], ["image"], "not symmetric"),
    ],
)
def test_bad_consensus_input_raises(grams, weights, mods, message):
    with pytest.raises(ValueError, match=message):
        consensus_gram(grams, weights, mods)


def _noisy_blocks(seed=0, groups=4, per=6, noise=0.9):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(groups, 8, generator=gen, dtype=torch.float64)
    z = centres.repeat_interleave(per, 0) + noise * torch.randn(
        groups * per, 8, generator=gen, dtype=torch.float64
    )
    truth = (
        torch.arange(groups).repeat_interleave(per)[:, None]
        == torch.arange(groups).repeat_interleave(per)[None]
    ).double()
    return anchor_gram(z), truth


def test_knn_denoise_sharpens_a_noisy_cluster_structure():
    from common.aggregation import knn_denoise

    gains = []
    for seed in range(5):
        g, truth = _noisy_blocks(seed)
        gains.append(float(cka(knn_denoise(g, 5), truth)) - float(cka(g, truth)))
    assert sum(gains) / len(gains) > 0.02


def test_knn_denoise_output_is_a_normalised_centred_symmetric_gram():
    from common.aggregation import knn_denoise

    out = knn_denoise(_noisy_blocks()[0], 3)
    assert torch.equal(out, out.T) and float(out.norm()) == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(out.sum(1), torch.zeros(24, dtype=out.dtype), atol=1e-9)
    with pytest.raises(ValueError, match="k < N"):
        knn_denoise(out, 24)


def test_snf_reinforces_structure_the_modalities_share_beyond_their_mean():
    from common.aggregation import consensus_gram, similarity_network_fusion

    gains = []
    for seed in range(5):
        grams = [_noisy_blocks(seed * 10 + i)[0] for i in range(3)]  # same concepts, own noise
        truth = _noisy_blocks(seed)[1]
        mean = consensus_gram(grams, [1.0] * 3, ["a", "b", "c"])
        fused = similarity_network_fusion(grams, [1.0] * 3, k=5)
        gains.append(float(cka(fused, truth)) - float(cka(mean, truth)))
    assert sum(gains) / len(gains) > 0.02


def test_snf_output_is_a_normalised_centred_symmetric_gram_and_order_free():
    from common.aggregation import similarity_network_fusion

    grams = [_noisy_blocks(i)[0] for i in range(3)]
    out = similarity_network_fusion(grams, [1.0, 2.0, 3.0], k=4)
    assert torch.equal(out, out.T) and float(out.norm()) == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(out.sum(1), torch.zeros(24, dtype=out.dtype), atol=1e-9)
    swapped = similarity_network_fusion(grams[::-1], [3.0, 2.0, 1.0], k=4)
    assert torch.allclose(out, swapped, atol=1e-12)


def test_snf_ignores_a_zero_weight_modality_in_the_fused_sum():
    from common.aggregation import similarity_network_fusion

    a, b = _noisy_blocks(1)[0], _noisy_blocks(2)[0]
    junk = anchor_gram(torch.randn(24, 8, generator=torch.Generator().manual_seed(9)).double())
    with_junk = similarity_network_fusion([a, b, junk], [1.0, 1.0, 0.0], k=4)
    assert torch.allclose(with_junk, similarity_network_fusion([a, b], [1.0, 1.0], k=4), atol=1e-9)


@pytest.mark.parametrize(
    ("weights", "k", "message"),
    [
        ([1.0], 4, "one weight per Gram"),
        ([1.0, -1.0], 4, "non-negative"),
        ([1.0, 1.0], 24, "k < N"),
    ],
)
def test_snf_bad_input_raises(weights, k, message):
    from common.aggregation import similarity_network_fusion

    g = _noisy_blocks()[0]
    with pytest.raises(ValueError, match=message):
        similarity_network_fusion([g, g], weights, k=k)
