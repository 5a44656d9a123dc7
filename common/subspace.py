"""Frozen shared subspace bases A: every party rebuilds the same A from (seed, name, rank, dim).

Why it is bit-identical on every machine: nothing here depends on the platform's random number
generator, BLAS, SIMD width or libm. The entries come from SHAKE-256 of a versioned key
(integers, exact), become doubles by an exact integer division, and are orthonormalised by
modified Gram-Schmidt (twice, for stability) in which every operation is a single IEEE-754
double operation (elementwise +, -, *, / and sqrt, all correctly rounded) and every dot
product is math.fsum, which is correctly rounded regardless of summation order. The final
cast to float32 is a correctly rounded conversion. IEEE-754 mandates all of these results
bit for bit, so every process on every machine gets the same bytes.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

BASIS_VERSION = "rosetta.shared_basis.v1"


def _uniform_entries(seed: int, name: str, rank: int, dim: int) -> np.ndarray:
    """rank x dim doubles in [-1, 1), exactly determined by the key."""
    key = f"{BASIS_VERSION}|{seed}|{name}|{rank}|{dim}".encode()
    raw = hashlib.shake_256(key).digest(8 * rank * dim)
    words = np.frombuffer(raw, dtype="<u8") >> np.uint64(11)  # top 53 bits: exact in a double
    unit = words.astype(np.float64) / float(2**53)  # exact: power-of-two division
    return (unit * 2.0 - 1.0).reshape(rank, dim)  # both steps exact in binary64


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Correctly rounded dot product: elementwise products are exact IEEE ops, fsum is exact."""
    return math.fsum((a * b).tolist())


def _orthonormalise_rows(m: np.ndarray) -> np.ndarray:
    """Modified Gram-Schmidt with one re-orthogonalisation pass, reproducible bit for bit."""
    rows: list[np.ndarray] = []
    for i in range(m.shape[0]):
        v = m[i].copy()
        for _ in range(2):
            for q in rows:
                v = v - _dot(v, q) * q
        norm = math.sqrt(_dot(v, v))
        if norm == 0.0:
            raise ValueError(f"row {i} of the basis is degenerate")  # probability ~0
        rows.append(v / norm)
    return np.stack(rows)


@lru_cache(maxsize=512)
def _basis_bytes(seed: int, name: str, rank: int, dim: int) -> bytes:
    q = _orthonormalise_rows(_uniform_entries(seed, name, rank, dim))
    return q.astype(np.float32).tobytes()


def shared_basis(seed: int, name: str, rank: int, dim: int) -> Tensor:
    """A: rank x dim float32 with orthonormal rows, a function of (seed, name, rank, dim) only.

    seed: the federation seed (int >= 0); name: the adapted layer's name; 1 <= rank <= dim.
    Bit-identical in every process and on every machine (see the module docstring). Returns a
    new tensor each call (callers may modify it).
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not name:
        raise ValueError("layer name must be non-empty")
    if not 1 <= rank <= dim:
        raise ValueError(f"need 1 <= rank <= dim, got rank={rank}, dim={dim}")
    data = bytearray(_basis_bytes(seed, name, rank, dim))
    return torch.frombuffer(data, dtype=torch.float32).reshape(rank, dim)
