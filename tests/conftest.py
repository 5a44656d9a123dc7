"""Shared fixtures: a tiny Digits-4M build (real TTS engines), made once per test session."""

import pytest

from rosetta.digits4m import build as digits4m
from rosetta.digits4m import sources


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    missing = sources.missing_engines()
    if missing:
        pytest.fail(f"TTS engines missing: {missing} (make test installs them)")
    out = tmp_path_factory.mktemp("digits4m-tiny")
    digits4m.build(out, seed=0, scale=digits4m.TINY)
    return out
