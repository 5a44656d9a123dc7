"""Contrastive losses: ordering of easy vs hard cases and error paths."""

import pytest
import torch

from common.losses import info_nce, supervised_contrastive


def test_info_nce_prefers_matching_views():
    z = torch.eye(8)
    assert float(info_nce(z, z)) < float(info_nce(z, z.roll(1, dims=0)))


def test_info_nce_lower_bound_and_scale_invariance():
    z = torch.randn(6, 4)
    assert float(info_nce(z, 5 * z)) == pytest.approx(float(info_nce(z, z)), abs=1e-5)
    assert float(info_nce(z, z)) >= 0.0


def test_supcon_prefers_label_consistent_geometry():
    labels = torch.tensor([0, 0, 1, 1])
    good = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    bad = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0], [0, 1.0]])
    assert float(supervised_contrastive(good, labels)) < float(supervised_contrastive(bad, labels))


def test_supcon_without_positives_is_zero():
    assert float(supervised_contrastive(torch.randn(3, 2), torch.tensor([0, 1, 2]))) == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: info_nce(torch.zeros(3, 2), torch.zeros(4, 2)), "two B x d"),
        (lambda: info_nce(torch.zeros(1, 2), torch.zeros(1, 2)), "B >= 2"),
        (lambda: info_nce(torch.zeros(2, 2), torch.zeros(2, 2), temperature=0.0), "temperature"),
        (lambda: supervised_contrastive(torch.zeros(3, 2), torch.zeros(2)), "labels"),
    ],
)
def test_bad_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()
