"""Augmentations: shapes kept, inputs untouched, reproducible from the generator, views differ."""

import pytest
import torch

from node.augment import AUGMENTERS, augment_text


def _batch(modality):
    gen = torch.Generator().manual_seed(0)
    return {
        "image": {"pixels": torch.rand(4, 1, 8, 8, generator=gen)},
        "audio": {"waveform": torch.randn(4, 1600, generator=gen)},
        "text": {
            "input_ids": torch.randint(200, 300, (4, 10), generator=gen),
            "attention_mask": torch.tensor(
                [[1] * 10, [1] * 6 + [0] * 4, [1] * 3 + [0] * 7, [1] * 8 + [0] * 2]
            ),
        },
        "sensor": {"signal": torch.randn(4, 1, 40, generator=gen)},
    }[modality]


@pytest.mark.parametrize("modality", ["image", "audio", "text", "sensor"])
def test_augmentation_keeps_shapes_and_leaves_input_untouched(modality):
    batch = _batch(modality)
    copy = {k: v.clone() for k, v in batch.items()}
    out = AUGMENTERS[modality](batch, torch.Generator().manual_seed(1))
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in batch.items()}
    assert all(torch.equal(batch[k], copy[k]) for k in batch)
    assert all(torch.isfinite(v.float()).all() for v in out.values())


@pytest.mark.parametrize("modality", ["image", "audio", "text", "sensor"])
def test_same_generator_same_view_and_two_draws_differ(modality):
    batch = _batch(modality)
    a = AUGMENTERS[modality](batch, torch.Generator().manual_seed(3))
    b = AUGMENTERS[modality](batch, torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    gen = torch.Generator().manual_seed(4)
    v1, v2 = AUGMENTERS[modality](batch, gen), AUGMENTERS[modality](batch, gen)
    assert any(not torch.equal(v1[k], v2[k]) for k in v1)


def test_text_augmentation_keeps_cls_and_sep_and_padding_consistent():
    batch = _batch("text")
    out = augment_text(batch, torch.Generator().manual_seed(0), mask_id=103, p_mask=0.5, p_drop=0.3)
    for i in range(4):
        real = int(out["attention_mask"][i].sum())
        assert real >= 3
        assert out["input_ids"][i, 0] == batch["input_ids"][i, 0]
        last_in = int(batch["attention_mask"][i].sum()) - 1
        assert out["input_ids"][i, real - 1] == batch["input_ids"][i, last_in]
        assert torch.all(out["input_ids"][i, real:] == 0)
