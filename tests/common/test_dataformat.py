"""The on-disk format: round trips per modality, and one clear error per kind of malformed data."""

import json

import pytest
import torch
from safetensors.torch import save_file

from common.dataformat import (
    DataFormatError,
    Samples,
    read_anchor_set,
    read_data_folder,
    sha256_file,
    write_anchor_set,
    write_data_folder,
)


def _samples(modality, n=4):
    gen = torch.Generator().manual_seed(0)
    if modality == "image":
        return Samples(
            "image",
            {"pixels": torch.randint(0, 256, (n, 1, 8, 8), generator=gen, dtype=torch.uint8)},
        )
    if modality == "audio":
        wave = torch.randint(-3000, 3000, (n, 800), generator=gen, dtype=torch.int16)
        return Samples("audio", {"waveform": wave, "length": torch.full((n,), 700)}, (), 16000)
    if modality == "text":
        return Samples("text", {}, tuple(f"sample {i} ünïcode" for i in range(n)))
    return Samples("sensor", {"signal": torch.randn(n, 2, 40, generator=gen)})


@pytest.mark.parametrize("modality", ["image", "audio", "text", "sensor"])
def test_data_folder_round_trip(tmp_path, modality):
    original = _samples(modality)
    write_data_folder(tmp_path / "d", original)
    back = read_data_folder(tmp_path / "d")
    assert back.modality == modality and len(back) == 4 and back.texts == original.texts
    assert back.sample_rate == original.sample_rate
    assert all(torch.equal(back.arrays[k], v) for k, v in original.arrays.items())


def test_anchor_set_round_trip_and_partial_read(tmp_path):
    per = {m: _samples(m, 3) for m in ("image", "audio", "text", "sensor")}
    write_anchor_set(tmp_path / "a", per, ["x", "y", "z"], name="demo")
    full = read_anchor_set(tmp_path / "a")
    assert full.concept_ids == ("x", "y", "z") and set(full.modalities) == set(per)
    only = read_anchor_set(tmp_path / "a", modalities=["sensor"], expected_digest=full.digest)
    assert set(only.modalities) == {"sensor"} and full.digest == sha256_file(
        tmp_path / "a" / "manifest.json"
    )


def _folder(tmp_path, modality="image"):
    folder = tmp_path / "d"
    write_data_folder(folder, _samples(modality))
    return folder


def _edit_manifest(folder, **changes):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def _rewrite_payload(folder, tensors):
    payload = folder / "image.safetensors"
    save_file(tensors, str(payload))
    _edit_manifest(folder, sha256=sha256_file(payload))


@pytest.mark.parametrize(
    ("damage", "where", "message"),
    [
        (lambda f: (f / "manifest.json").unlink(), "manifest.json", "missing"),
        (lambda f: (f / "image.safetensors").unlink(), "image.safetensors", "missing"),
        (lambda f: (f / "manifest.json").write_text("{nope"), "manifest.json", "not valid JSON"),
        (lambda f: _edit_manifest(f, format="other"), "manifest.json", "format must be"),
        (lambda f: _edit_manifest(f, modality="smell"), "manifest.json", "unknown modality"),
        (lambda f: _edit_manifest(f, samples=5), "image.safetensors", "manifest declares 5"),
        (lambda f: _edit_manifest(f, sha256="0" * 64), "image.safetensors", "hash does not match"),
        (
            lambda f: (f / "image.safetensors").write_bytes(b"garbage"),
            "image.safetensors",
            "hash does not match",
        ),
        (
            lambda f: _rewrite_payload(f, {"pixels": torch.zeros(4, 8, 8, dtype=torch.uint8)}),
            "image.safetensors",
            "4 dimensions",
        ),
        (
            lambda f: _rewrite_payload(f, {"pixels": torch.zeros(4, 1, 8, 8, dtype=torch.int32)}),
            "image.safetensors",
            "dtype",
        ),
        (
            lambda f: _rewrite_payload(f, {"pixels": torch.full((4, 1, 8, 8), 2.0)}),
            "image.safetensors",
            r"\[0, 1\]",
        ),
        (
            lambda f: _rewrite_payload(f, {"pixels": torch.full((4, 1, 8, 8), float("nan"))}),
            "image.safetensors",
            "NaN",
        ),
        (
            lambda f: _rewrite_payload(f, {"image": torch.zeros(4, 1, 8, 8)}),
            "image.safetensors",
            "lacks the tensor 'pixels'",
        ),
    ],
)
def test_malformed_data_folder_is_one_line_naming_file_and_problem(
    tmp_path, damage, where, message
):
    folder = _folder(tmp_path)
    damage(folder)
    with pytest.raises(DataFormatError, match=message) as info:
        read_data_folder(folder)
    assert str(info.value).startswith(str(folder / where)) and "\n" not in str(info.value)


def test_malformed_text_and_audio(tmp_path):
    folder = _folder(tmp_path, "text")
    payload = folder / "text.jsonl"
    payload.write_text('{"text": "ok"}\n["not", "an", "object"]\n')
    _edit_manifest(folder, sha256=sha256_file(payload), samples=2)
    with pytest.raises(DataFormatError, match="line 2"):
        read_data_folder(folder)
    audio = tmp_path / "audio"
    write_data_folder(audio, _samples("audio"))
    _edit_manifest(audio, sample_rate=None)
    with pytest.raises(DataFormatError, match="sample_rate"):
        read_data_folder(audio)


def test_anchor_set_errors(tmp_path):
    per = {m: _samples(m, 3) for m in ("image", "text")}
    write_anchor_set(tmp_path / "a", per, ["x", "y", "z"])
    with pytest.raises(DataFormatError, match="no 'audio' instances"):
        read_anchor_set(tmp_path / "a", modalities=["audio"])
    with pytest.raises(DataFormatError, match="digest differs"):
        read_anchor_set(tmp_path / "a", expected_digest="0" * 64)
    with pytest.raises(DataFormatError, match="4 rows for 3 concepts"):
        write_anchor_set(tmp_path / "b", {"image": _samples("image", 4)}, ["x", "y", "z"])
    manifest = tmp_path / "a" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["concept_ids"] = ["x", "x", "z"]
    manifest.write_text(json.dumps(doc))
    with pytest.raises(DataFormatError, match="distinct ids"):
        read_anchor_set(tmp_path / "a")
