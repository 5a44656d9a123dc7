"""shared_basis: orthonormal, reproducible across processes, and an exact mean of B A."""

import hashlib
import subprocess
import sys

import pytest
import torch

from common.subspace import shared_basis

_SNIPPET = (
    "import hashlib; from common.subspace import shared_basis; "
    "a = shared_basis(7, 'backbone.layers.0.attn.q', 8, 384); "
    "print(hashlib.sha256(a.numpy().tobytes()).hexdigest())"
)


def _digest(a: torch.Tensor) -> str:
    return hashlib.sha256(a.numpy().tobytes()).hexdigest()


def test_identical_in_two_separate_processes():
    outs = [
        subprocess.run(
            [sys.executable, "-c", _SNIPPET], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert outs[0] == outs[1] == _digest(shared_basis(7, "backbone.layers.0.attn.q", 8, 384))


def test_matches_the_recorded_bytes():
    # Recorded once; a change here means every deployed federation would disagree on A.
    assert _digest(shared_basis(0, "x", 2, 4)) == RECORDED_DIGEST


def test_rows_are_orthonormal():
    a = shared_basis(3, "layer", 16, 384).double()
    assert torch.allclose(a @ a.T, torch.eye(16, dtype=torch.float64), atol=1e-6)


def test_depends_on_every_argument():
    base = shared_basis(1, "a", 4, 32)
    assert not torch.equal(base, shared_basis(2, "a", 4, 32))
    assert not torch.equal(base, shared_basis(1, "b", 4, 32))
    assert not torch.equal(base[:3], shared_basis(1, "a", 3, 32))


def test_fixed_basis_makes_mean_of_b_times_a_equal_mean_of_ba():
    a = shared_basis(0, "layer", 4, 24).double()
    gen = torch.Generator().manual_seed(0)
    bs = [torch.randn(10, 4, generator=gen, dtype=torch.float64) for _ in range(5)]
    mean_b_then_a = torch.stack(bs).mean(0) @ a
    mean_of_ba = torch.stack([b @ a for b in bs]).mean(0)
    assert torch.allclose(mean_b_then_a, mean_of_ba, atol=1e-12)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, "a", 2, 4), "seed"),
        ((0, "", 2, 4), "name"),
        ((0, "a", 0, 4), "rank"),
        ((0, "a", 5, 4), "rank"),
    ],
)
def test_bad_arguments_raise(args, message):
    with pytest.raises(ValueError, match=message):
        shared_basis(*args)


RECORDED_DIGEST = "4c7f1ee5d3afa98e2f7c84c74fe1c984796aea285d347f84d25bd31b180fbfbe"
