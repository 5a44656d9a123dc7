"""Digits-4M build (tiny scale, real TTS engines): format, determinism, no labels, disjoint splits."""

import hashlib
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from common.dataformat import PAYLOAD_FILES, read_anchor_set, read_data_folder
from rosetta.digits4m import build as b
from rosetta.digits4m import sources


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return tiny_dataset


def _digest_tree(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_second_build_with_the_same_seed_is_identical(dataset, tmp_path):
    b.build(tmp_path / "again", seed=0, scale=b.TINY)
    assert _digest_tree(dataset) == _digest_tree(tmp_path / "again")


def test_every_folder_reads_back_in_the_documented_format(dataset):
    for layout in ("demo", "full"):
        doc = json.loads((dataset / "layouts" / f"{layout}.json").read_text())
        for node in doc["nodes"]:
            samples = read_data_folder(dataset / node["data"])
            assert samples.modality == node["modality"] and len(samples) == node["samples"]
        for path in doc["tests"].values():
            read_data_folder(dataset / path)
    demo = json.loads((dataset / "layouts" / "demo.json").read_text())
    assert sorted(n["modality"] for n in demo["nodes"]) == ["audio", "image", "sensor", "text"]


def test_no_label_reaches_node_or_anchor_folders(dataset):
    for manifest in dataset.rglob("manifest.json"):
        if "eval" in manifest.parts:
            continue
        folder = manifest.parent
        assert {p.name for p in folder.iterdir()} <= {"manifest.json", *PAYLOAD_FILES.values()}
        assert "label" not in manifest.read_text().lower()
        for payload in folder.glob("*.safetensors"):
            assert not any("label" in k for k in load_file(str(payload)))


def test_anchor_tuples_share_a_class_and_have_k_per_class(dataset):
    for k in b.TINY.anchor_ks:
        anchors = read_anchor_set(dataset / f"anchors/k{k}")
        assert len(anchors) == 10 * k and set(anchors.modalities) == {
            "image",
            "audio",
            "text",
            "sensor",
        }
        labels = load_file(str(dataset / f"eval/anchors/k{k}/labels.safetensors"))["labels"].numpy()
        assert np.bincount(labels, minlength=10).tolist() == [k] * 10
        assert labels.tolist() != sorted(labels.tolist())  # position says nothing about class


def test_splits_are_disjoint_by_group():
    rng = np.random.default_rng(0)
    for splits in (
        b.split_text(rng, b.TINY),
        b.split_mnist(rng, b.TINY),
        b.split_sensor(0, b.TINY),
    ):
        groups = {name: set(s.groups) for name, s in splits.items()}
        names = list(groups)
        for i, x in enumerate(names):
            for y in names[i + 1 :]:
                assert not groups[x] & groups[y], (x, y)


def test_label_skewed_shards_partition_the_data():
    labels = np.repeat(np.arange(10), 20)
    shards = b.dirichlet_shards(np.random.default_rng(1), labels, 3, 0.5)
    assert sorted(np.concatenate(shards).tolist()) == list(range(200))
    hist = np.stack([np.bincount(labels[s], minlength=10) for s in shards])
    assert hist.std(axis=0).mean() > 2  # skewed, not an even split


def test_tts_is_byte_identical_across_calls():
    voice = sources.voice_catalogue()[0]
    first, n1 = sources.synthesise(voice, 3)
    second, n2 = sources.synthesise(voice, 3)
    assert n1 == n2 and first.tobytes() == second.tobytes() and np.abs(first).max() > 1000
