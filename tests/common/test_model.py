"""The homogeneous transformer: shapes per modality, pretrained loading, strict state loading."""

import pytest
import torch
import torch.nn.functional as F

from common.config import ModelConfig
from common.partition import (
    load_local_state,
    load_shared_state,
    local_state,
    modality_of,
    shared_state,
)
from common.pretrained import WordPieceTokenizer, build_model, minilm_dir


@pytest.fixture(scope="module")
def tiny():
    return build_model(ModelConfig.tiny())


def test_every_modality_maps_to_d(tiny):
    cfg = tiny.config
    tk = cfg.tokenizers
    inputs = {
        "image": {"pixels": torch.rand(2, 1, 28, 28)},  # resized to image_size
        "audio": {"waveform": torch.randn(2, 2000)},  # cropped to audio_samples
        "text": {
            "input_ids": torch.randint(0, 100, (2, 5)),
            "attention_mask": torch.tensor([[1, 1, 1, 0, 0]] * 2),
        },
        "sensor": {"signal": torch.randn(2, 1, 10)},  # padded to sensor_length
    }
    for modality, batch in inputs.items():
        tokens, _ = tiny.tokenize(modality, batch)
        assert tokens.shape[0] == 2 and tokens.shape[2] == cfg.backbone.dim
        if modality != "text":
            assert tokens.shape[1] == tk.tokens(modality)
        assert tiny(modality, batch).shape == (2, cfg.backbone.dim)


def test_text_padding_does_not_change_the_embedding(tiny):
    ids = torch.tensor([[5, 6, 7, 0, 0, 0]])
    short = {"input_ids": ids[:, :3], "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    padded = {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 0, 0, 0]])}
    with torch.no_grad():
        assert torch.allclose(tiny("text", short), tiny("text", padded), atol=1e-5)


def test_missing_modality_and_missing_inputs_are_clear_errors():
    model = build_model(ModelConfig.tiny().with_modalities("image"))
    with pytest.raises(ValueError, match="no 'audio' tokenizer"):
        model("audio", {"waveform": torch.zeros(1, 100)})
    with pytest.raises(ValueError, match="lacks"):
        model("image", {"waveform": torch.zeros(1, 100)})
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model("image", {"pixels": torch.zeros(1, 3, 8, 8)})


def test_tokenizers_start_identical_in_every_process_from_the_seed():
    a = shared_state(build_model(ModelConfig.tiny()))
    torch.manual_seed(123)  # the global RNG must not matter
    b = shared_state(build_model(ModelConfig.tiny()))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_shared_state_names_tell_their_modality(tiny):
    mods = {modality_of(n) for n in shared_state(tiny)}
    assert mods == {None, "image", "audio", "text", "sensor"}


def test_strict_state_loading_rejects_missing_extra_wrong_shape_and_nan(tiny):
    state = shared_state(tiny)
    name = next(iter(state))
    with pytest.raises(ValueError, match="missing"):
        load_shared_state(tiny, {k: v for k, v in state.items() if k != name})
    with pytest.raises(ValueError, match="unexpected"):
        load_shared_state(tiny, {**state, "bogus": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        load_shared_state(tiny, {**state, name: torch.zeros(1)})
    with pytest.raises(ValueError, match="non-finite"):
        load_shared_state(tiny, {**state, name: torch.full_like(state[name], float("nan"))})
    with pytest.raises(ValueError, match="missing"):
        load_local_state(tiny, {})


def test_state_round_trip(tiny):
    shared, local = shared_state(tiny), local_state(tiny)
    changed = {k: v + 1.0 for k, v in shared.items()}
    load_shared_state(tiny, changed)
    assert all(torch.equal(shared_state(tiny)[k], changed[k]) for k in shared)
    load_shared_state(tiny, shared)
    load_local_state(tiny, local)
    assert all(torch.equal(shared_state(tiny)[k], shared[k]) for k in shared)


def test_pretrained_backbone_matches_sentence_transformers():
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    sentences = ["a handwritten seven", "three plus four", "neun"]
    model = build_model(ModelConfig(device="cpu"))
    tok = WordPieceTokenizer(32)
    with torch.no_grad():
        ours = F.normalize(model("text", tok(sentences)), dim=1)
    reference = SentenceTransformer(str(minilm_dir()), device="cpu").encode(
        sentences, convert_to_tensor=True
    )
    assert torch.allclose(ours, reference, atol=1e-5)


def test_random_backbone_is_the_same_in_every_process_from_the_seed():
    torch.manual_seed(1)
    a = dict(build_model(ModelConfig.tiny()).named_parameters())
    torch.manual_seed(2)
    b = dict(build_model(ModelConfig.tiny()).named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = dict(build_model(ModelConfig.tiny(seed=5)).named_parameters())
    assert not torch.equal(
        a["backbone.layers.0.attn.q.weight"], c["backbone.layers.0.attn.q.weight"]
    )
