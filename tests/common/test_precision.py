"""Diagonal Fisher precision: hand-computed values, monotonicity, error paths."""

import pytest
import torch

from common.precision import DiagonalFisher, anchor_coverage


def test_hand_computed_fisher():
    f = DiagonalFisher(prior=0.0)
    f.observe([("w", torch.tensor([1.0, 2.0]))], batch_size=4)
    f.observe([("w", torch.tensor([3.0, 0.0]))], batch_size=4)
    # mean over steps of B g^2 = [4*(1+9)/2, 4*(4+0)/2] = [20, 8]; times n = 10
    assert torch.allclose(f.per_element(10)["w"], torch.tensor([200.0, 80.0]))
    assert f.per_tensor(10)["w"] == pytest.approx(140.0)
    assert f.node_precision(10) == pytest.approx(140.0)


def test_node_precision_is_numel_weighted():
    f = DiagonalFisher(prior=0.0)
    f.observe([("a", torch.tensor([1.0])), ("b", torch.tensor([0.0, 0.0, 0.0]))], batch_size=1)
    assert f.node_precision(1) == pytest.approx(0.25)


def test_more_samples_means_more_precision():
    f = DiagonalFisher()
    f.observe([("w", torch.ones(3))], batch_size=8)
    assert f.node_precision(1000) > f.node_precision(10)


def test_none_gradients_are_skipped_and_reset_clears():
    f = DiagonalFisher()
    f.observe([("w", None), ("v", torch.ones(2))], batch_size=2)
    assert set(f.per_element(1)) == {"v"}
    f.reset()
    with pytest.raises(ValueError, match="no gradients"):
        f.per_element(1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: DiagonalFisher(prior=-1.0), "prior"),
        (lambda: DiagonalFisher().observe([("w", torch.ones(1))], batch_size=0), "batch size"),
        (lambda: DiagonalFisher().per_element(5), "no gradients"),
    ],
)
def test_bad_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_non_finite_gradient_is_reported():
    f = DiagonalFisher()
    f.observe([("w", torch.tensor([float("nan")]))], batch_size=1)
    with pytest.raises(ValueError, match="non-finite"):
        f.per_element(1)


def test_non_positive_sample_count_is_rejected():
    f = DiagonalFisher()
    f.observe([("w", torch.ones(1))], batch_size=1)
    with pytest.raises(ValueError, match="n_samples"):
        f.per_tensor(0)


def test_coverage_is_one_when_private_data_are_the_anchors():
    z = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    assert anchor_coverage(z, z) == pytest.approx(1.0)


def test_coverage_is_scale_invariant_and_bounded():
    gen = torch.Generator().manual_seed(1)
    anchors, private = torch.randn(40, 8, generator=gen), torch.randn(100, 8, generator=gen)
    c = anchor_coverage(private, anchors)
    assert 0.0 <= c <= 1.0
    assert anchor_coverage(7.0 * private, 0.1 * anchors) == pytest.approx(c)


def test_data_off_the_anchor_distribution_get_low_coverage():
    gen = torch.Generator().manual_seed(2)
    centres = torch.randn(10, 32, generator=gen) * 3
    anchors = centres.repeat_interleave(4, 0) + torch.randn(40, 32, generator=gen) * 0.3
    clean = centres.repeat_interleave(20, 0) + torch.randn(200, 32, generator=gen) * 0.3
    noise = torch.randn(200, 32, generator=gen) * 3  # a broken sensor: unrelated to the concepts
    c_clean, c_noise = anchor_coverage(clean, anchors), anchor_coverage(noise, anchors)
    assert c_clean > 0.9
    assert c_noise < 0.5 * c_clean


@pytest.mark.parametrize(
    "private, anchors",
    [(torch.zeros(3, 4), torch.zeros(1, 4)), (torch.zeros(0, 4), torch.zeros(5, 4)),
     (torch.zeros(3, 5), torch.zeros(5, 4))],
)  # fmt: skip
def test_coverage_rejects_bad_shapes(private, anchors):
    with pytest.raises(ValueError):
        anchor_coverage(private, anchors)
