"""Anchor Grams and CKA: identities, invariances and every ValueError path."""

import pytest
import torch

from common.alignment import (
    anchor_gram,
    center_gram,
    cka,
    feature_cka,
    gram_block,
    pack_upper,
    unpack_upper,
)


def _z(n=12, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _orthogonal(d, seed=1):
    q, _ = torch.linalg.qr(
        torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    return q


def test_cka_is_one_under_rotation():
    z = _z()
    assert float(cka(anchor_gram(z), anchor_gram(z @ _orthogonal(5)))) == pytest.approx(
        1.0, abs=1e-12
    )


def test_cka_is_one_under_scaling():
    z = _z()
    assert float(cka(anchor_gram(z), anchor_gram(3.7 * z))) == pytest.approx(1.0, abs=1e-12)
    assert float(cka(z @ z.T, 0.01 * (z @ z.T))) == pytest.approx(1.0, abs=1e-12)


def test_gram_space_cka_equals_feature_space_cka():
    x, y = _z(20, 4, 0), _z(20, 7, 1)
    assert float(cka(x @ x.T, y @ y.T)) == pytest.approx(float(feature_cka(x, y)), abs=1e-10)


def test_cka_of_unrelated_geometry_is_below_one():
    assert float(cka(anchor_gram(_z(seed=0)), anchor_gram(_z(seed=5)))) < 0.9


def test_centred_gram_rows_and_columns_sum_to_zero():
    k = center_gram(_z() @ _z().T)
    assert torch.allclose(k.sum(dim=1), torch.zeros(12, dtype=k.dtype), atol=1e-10)
    assert torch.allclose(k.sum(dim=0), torch.zeros(12, dtype=k.dtype), atol=1e-10)


def test_anchor_gram_is_symmetric_centred_and_unit_norm():
    k = anchor_gram(_z().float())
    assert torch.equal(k, k.T)
    assert torch.allclose(k.sum(dim=1), torch.zeros(12), atol=1e-6)
    assert float(k.norm()) == pytest.approx(1.0, abs=1e-6)


def test_anchor_gram_uses_directions_only():
    z = _z()
    scales = torch.rand(12, 1, dtype=z.dtype) * 10 + 0.1
    assert torch.allclose(anchor_gram(z), anchor_gram(z * scales), atol=1e-12)


def test_cka_is_differentiable():
    z = _z().requires_grad_()
    t = anchor_gram(_z(seed=3))
    cka(anchor_gram(z), t).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_gram_block_gives_the_subset_cka_exactly():
    z, w = _z(), _z(seed=9)
    idx = torch.tensor([0, 3, 4, 8, 11])
    full_target = anchor_gram(w)
    direct = cka(anchor_gram(z[idx]), anchor_gram(w[idx]))
    via_block = cka(anchor_gram(z[idx]), gram_block(full_target, idx))
    assert float(direct) == pytest.approx(float(via_block), abs=1e-10)


def test_pack_unpack_round_trip():
    k = anchor_gram(_z())
    packed = pack_upper(k)
    assert packed.numel() == 12 * 13 // 2
    assert torch.equal(unpack_upper(packed, 12), k)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cka(torch.zeros(3, 4), torch.zeros(3, 4)), "square"),
        (lambda: cka(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.eye(2)), "not symmetric"),
        (lambda: cka(torch.eye(3), torch.eye(4)), "sizes differ"),
        (lambda: cka(torch.full((3, 3), float("nan")), torch.eye(3)), "non-finite"),
        (lambda: cka(torch.ones(1, 1), torch.ones(1, 1)), "N >= 2"),
        (lambda: anchor_gram(torch.zeros(3)), "N x d"),
        (lambda: anchor_gram(torch.ones(1, 3)), "at least 2"),
        (lambda: anchor_gram(torch.tensor([[1.0, float("inf")], [0.0, 1.0]])), "non-finite"),
        (lambda: unpack_upper(torch.zeros(5), 3), "needs 6 values"),
        (lambda: feature_cka(torch.zeros(3, 2), torch.zeros(4, 2)), "N x p"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
