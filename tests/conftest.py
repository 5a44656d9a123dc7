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


# A tiny model for service tests (as a TOML [model] table): random init, small dims; text
# uses the real WordPiece vocabulary, hence vocab_size.
TINY_MODEL_TABLE = {
    "device": "cpu",
    "backbone": {
        "dim": 32,
        "layers": 2,
        "heads": 2,
        "mlp_dim": 64,
        "max_positions": 64,
        "vocab_size": 30522,
        "pretrained": "none",
    },
    "adapter": {"rank": 4, "alpha": 8.0},
    "tokenizers": {
        "image_size": 8,
        "image_patch": 4,
        "audio_samples": 1600,
        "audio_n_fft": 128,
        "audio_hop": 64,
        "audio_n_mels": 16,
        "text_max_tokens": 12,
        "sensor_length": 16,
        "sensor_window": 4,
    },
}


@pytest.fixture(scope="session")
def tiny_model_table():
    return TINY_MODEL_TABLE


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A federation CA with a coordinator server certificate and node certificates (image,
    audio, text, sensor, stranger), and another CA that signed its own "image"."""
    from common import certs

    root = tmp_path_factory.mktemp("pki")
    certs.create_ca(root / "ca")
    certs.create_ca(root / "rogue-ca", name="Another CA")
    _, csr = certs.create_request(root / "coordinator", "coordinator", ["localhost", "127.0.0.1"])
    certs.sign_request(root / "ca", csr, root / "coordinator" / "coordinator.crt", server=True)
    for name in ("image", "audio", "text", "sensor", "stranger"):
        _, csr = certs.create_request(root / name, name)
        certs.sign_request(root / "ca", csr, root / name / f"{name}.crt")
    _, csr = certs.create_request(root / "rogue", "image")
    certs.sign_request(root / "rogue-ca", csr, root / "rogue" / "image.crt")
    return root
