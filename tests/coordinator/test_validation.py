"""Upload validation: a good upload passes; each bad one is rejected with its reason."""

import pytest
import torch

from common.alignment import anchor_gram
from coordinator.validation import UploadLimits, UploadRejectedError, validate_upload

LAYOUT = {
    "backbone.l.lora_b": (4, 2),
    "tokenizers.image.proj.weight": (3, 2),
    "tokenizers.audio.proj.weight": (5, 2),
}


def _good(**changes):
    upload = {
        "node": "n1",
        "modality": "image",
        "round_id": 3,
        "current_round": 3,
        "delta": {
            "backbone.l.lora_b": torch.full((4, 2), 0.1),
            "tokenizers.image.proj.weight": torch.zeros(3, 2),
        },
        "precisions": {
            "backbone.l.lora_b": torch.tensor(2.0),
            "tokenizers.image.proj.weight": torch.ones(3, 2),
        },
        "gram": anchor_gram(torch.randn(6, 3)),
        "node_precision": 1.5,
        "sample_count": 40,
        "layout": LAYOUT,
        "n_anchors": 6,
    }
    upload.update(changes)
    return upload


def test_a_good_upload_passes():
    validate_upload(**_good())


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"round_id": 2}, "wrong_round"),
        ({"delta": {"backbone.l.lora_b": torch.zeros(4, 2)}}, "wrong_names"),
        ({"modality": "audio"}, "wrong_names"),
        (
            {
                "delta": {
                    "backbone.l.lora_b": torch.zeros(4, 3),
                    "tokenizers.image.proj.weight": torch.zeros(3, 2),
                }
            },
            "wrong_shape",
        ),
        (
            {
                "delta": {
                    "backbone.l.lora_b": torch.full((4, 2), float("nan")),
                    "tokenizers.image.proj.weight": torch.zeros(3, 2),
                }
            },
            "non_finite",
        ),
        (
            {
                "delta": {
                    "backbone.l.lora_b": torch.full((4, 2), 100.0),
                    "tokenizers.image.proj.weight": torch.zeros(3, 2),
                }
            },
            "delta_norm",
        ),
        (
            {
                "precisions": {
                    "backbone.l.lora_b": torch.tensor(-1.0),
                    "tokenizers.image.proj.weight": torch.ones(3, 2),
                }
            },
            "bad_precision",
        ),
        ({"precisions": {"backbone.l.lora_b": torch.ones(2)}}, "wrong_names"),
        ({"node_precision": float("inf")}, "bad_precision"),
        ({"sample_count": 0}, "bad_scalar"),
        ({"gram": anchor_gram(torch.randn(5, 3))}, "wrong_shape"),
        ({"gram": torch.triu(torch.ones(6, 6))}, "gram_not_symmetric"),
        ({"gram": torch.full((6, 6), float("inf"))}, "non_finite"),
    ],
)
def test_bad_uploads_are_rejected_with_a_reason(changes, reason):
    with pytest.raises(UploadRejectedError) as info:
        validate_upload(**_good(**changes))
    assert info.value.reason == reason and str(info.value)


def test_the_norm_cap_is_configurable():
    validate_upload(**_good(), limits=UploadLimits(max_delta_norm=1.0))
    with pytest.raises(UploadRejectedError, match="exceeds the cap"):
        validate_upload(**_good(), limits=UploadLimits(max_delta_norm=0.1))
