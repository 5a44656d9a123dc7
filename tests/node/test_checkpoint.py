"""A node's checkpoint: a resumed trainer continues exactly where the saved one was."""

import pytest
import torch

from common.config import ModelConfig, TrainConfig
from common.partition import load_shared_state, local_state, shared_state
from common.pretrained import build_model
from node import checkpoint
from node.training import LocalTrainer, RoundInterrupted


def _sensor(n, seed):
    gen = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, 16)
    freq = torch.randint(1, 5, (n, 1), generator=gen).float()
    return {
        "signal": torch.sin(6.28 * freq * t).unsqueeze(1)
        + 0.1 * torch.randn(n, 1, 16, generator=gen)
    }


def _trainer():
    cfg = ModelConfig.tiny().with_modalities("sensor")
    train = TrainConfig(steps=3, batch_size=8, lr=1e-2, magnitude_lr=1e-2)
    return LocalTrainer(build_model(cfg), "sensor", _sensor(40, 0), _sensor(6, 1), train)


ID = checkpoint.Identity("sensor-site", "fed", '{"model": 1}')


def test_resume_continues_bit_for_bit(tmp_path):
    a = _trainer()
    a.run_round(None)
    checkpoint.save(tmp_path, a, ID, round_id=4)
    b = _trainer()
    assert checkpoint.load(tmp_path, b, ID) == 4
    for k, v in local_state(a.model).items():
        assert torch.equal(local_state(b.model)[k], v)
    load_shared_state(b.model, shared_state(a.model))  # what the next task brings
    ra, rb = a.run_round(None), b.run_round(None)  # same optimiser moments, same random stream
    assert ra.loss == rb.loss
    assert all(torch.equal(ra.delta[k], rb.delta[k]) for k in ra.delta)


def test_no_checkpoint_means_round_zero(tmp_path):
    assert checkpoint.load(tmp_path, _trainer(), ID) == 0


@pytest.mark.parametrize(
    "other",
    [
        checkpoint.Identity("other-site", "fed", ID.model_json),
        checkpoint.Identity("sensor-site", "another-federation", ID.model_json),
        checkpoint.Identity("sensor-site", "fed", '{"model": 2}'),
    ],
)
def test_a_checkpoint_of_another_site_federation_or_model_is_refused(tmp_path, other):
    checkpoint.save(tmp_path, _trainer(), ID, round_id=1)
    with pytest.raises(checkpoint.CheckpointError, match="written for another"):
        checkpoint.load(tmp_path, _trainer(), other)


def test_a_corrupt_checkpoint_is_named(tmp_path):
    (tmp_path / checkpoint.FILE).write_bytes(b"not safetensors")
    with pytest.raises(checkpoint.CheckpointError, match="unreadable checkpoint"):
        checkpoint.load(tmp_path, _trainer(), ID)


def test_a_stop_request_abandons_the_round_without_touching_the_model():
    t = _trainer()
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    with pytest.raises(RoundInterrupted):
        t.run_round(None, should_stop=lambda: True)
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())
