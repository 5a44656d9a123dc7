"""The one on-disk format for a node's private data and for the public anchor set (docs/DATA.md).

A *data folder* holds one modality's samples: `manifest.json` plus one payload file.
An *anchor set* is a folder holding `manifest.json` and one payload file per modality; row j of
every payload is concept j. Every payload's SHA-256 is in its manifest and is checked on read.
Labels never live in these folders (evaluation labels sit under the dataset's `eval/` tree).

Payloads, per modality:
    image   <name>.safetensors  "pixels"   uint8 (N, C, H, W) in 0..255, or float32 in [0, 1]
    audio   <name>.safetensors  "waveform" int16 or float32 (N, S) mono; manifest "sample_rate"
                                "length"   int64 (N,) optional: real samples per row (rest is padding)
    text    <name>.jsonl        one JSON object per line: {"text": "..."}
    sensor  <name>.safetensors  "signal"   float32 (N, C, T)
Every error is a DataFormatError (a ValueError) whose message names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from common.config import MODALITIES

NODE_FORMAT = "rosetta.data.v1"
ANCHOR_FORMAT = "rosetta.anchors.v1"
MANIFEST = "manifest.json"
PAYLOAD_FILES = {
    "image": "image.safetensors",
    "audio": "audio.safetensors",
    "text": "text.jsonl",
    "sensor": "sensor.safetensors",
}


class DataFormatError(ValueError):
    """Malformed data; str() is one line naming the file and the problem."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


@dataclass(frozen=True)
class Samples:
    """One modality's samples as read from disk, before tokenization.

    arrays: the payload tensors (image "pixels", audio "waveform"/"length", sensor "signal");
    texts: the strings for text. sample_rate: audio only.
    """

    modality: str
    arrays: dict[str, Tensor]
    texts: tuple[str, ...] = ()
    sample_rate: int | None = None

    def __len__(self) -> int:
        if self.modality == "text":
            return len(self.texts)
        return int(next(iter(self.arrays.values())).shape[0])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- writing


def _write_payload(path: Path, samples: Samples) -> None:
    _check_samples(path, samples)
    if samples.modality == "text":
        lines = [json.dumps({"text": t}, ensure_ascii=False) for t in samples.texts]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        save_file({k: v.contiguous() for k, v in samples.arrays.items()}, str(path))


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_data_folder(folder: Path, samples: Samples, description: str = "") -> None:
    """Write one modality's samples as a data folder (manifest + payload)."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = folder / PAYLOAD_FILES[samples.modality]
    _write_payload(payload, samples)
    manifest: dict[str, Any] = {
        "format": NODE_FORMAT,
        "modality": samples.modality,
        "samples": len(samples),
        "file": payload.name,
        "sha256": sha256_file(payload),
        "description": description,
    }
    if samples.sample_rate is not None:
        manifest["sample_rate"] = samples.sample_rate
    _write_json(folder / MANIFEST, manifest)


def write_anchor_set(
    folder: Path, per_modality: Mapping[str, Samples], concept_ids: Sequence[str], name: str = ""
) -> None:
    """Write an anchor set: row j of every modality's payload is concept concept_ids[j]."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(set(concept_ids)) != len(concept_ids):
        raise DataFormatError(folder / MANIFEST, "concept ids repeat")
    entries: dict[str, Any] = {}
    for modality, samples in per_modality.items():
        payload = folder / PAYLOAD_FILES[modality]
        if len(samples) != len(concept_ids):
            raise DataFormatError(payload, f"{len(samples)} rows for {len(concept_ids)} concepts")
        _write_payload(payload, samples)
        entries[modality] = {"file": payload.name, "sha256": sha256_file(payload)}
        if samples.sample_rate is not None:
            entries[modality]["sample_rate"] = samples.sample_rate
    _write_json(
        folder / MANIFEST,
        {
            "format": ANCHOR_FORMAT,
            "name": name,
            "concepts": len(concept_ids),
            "concept_ids": list(concept_ids),
            "modalities": entries,
        },
    )


# ---------------------------------------------------------------- reading


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataFormatError(path, "missing")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(
            path, f"not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
        ) from None
    if not isinstance(obj, dict):
        raise DataFormatError(path, "must hold a JSON object")
    return obj


def _require(
    manifest: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path
) -> Any:
    if key not in manifest:
        raise DataFormatError(path, f"lacks the field {key!r}")
    if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
        raise DataFormatError(path, f"field {key!r} has the wrong type")
    return manifest[key]


def _read_payload(path: Path, modality: str, sha256: str, sample_rate: Any) -> Samples:
    if not path.is_file():
        raise DataFormatError(path, "missing")
    if sha256_file(path) != sha256:
        raise DataFormatError(
            path, "content hash does not match the manifest (file changed or corrupt)"
        )
    if modality == "text":
        texts = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataFormatError(path, f"line {i} is not JSON") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataFormatError(path, f'line {i} must be an object with a string "text"')
            texts.append(record["text"])
        samples = Samples("text", {}, tuple(texts))
    else:
        try:
            arrays = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise DataFormatError(path, f"not a readable safetensors file ({exc})") from None
        rate = None
        if modality == "audio":
            if (
                not isinstance(sample_rate, int)
                or isinstance(sample_rate, bool)
                or sample_rate <= 0
            ):
                raise DataFormatError(
                    path, "audio needs a positive integer sample_rate in the manifest"
                )
            rate = sample_rate
        samples = Samples(modality, dict(arrays), (), rate)
    _check_samples(path, samples)
    return samples


_SPECS: dict[str, dict[str, tuple[int, tuple[torch.dtype, ...]]]] = {
    "image": {"pixels": (4, (torch.uint8, torch.float32))},
    "audio": {"waveform": (2, (torch.int16, torch.float32)), "length": (1, (torch.int64,))},
    "sensor": {"signal": (3, (torch.float32,))},
}
_REQUIRED = {"image": ("pixels",), "audio": ("waveform",), "sensor": ("signal",)}


def _check_samples(path: Path, samples: Samples) -> None:
    """Shapes, dtypes and values of a payload; DataFormatError naming the file otherwise."""
    if samples.modality not in MODALITIES:
        raise DataFormatError(
            path, f"unknown modality {samples.modality!r} (expected one of {MODALITIES})"
        )
    if samples.modality == "text":
        if not samples.texts:
            raise DataFormatError(path, "holds no samples")
        return
    spec = _SPECS[samples.modality]
    for key in _REQUIRED[samples.modality]:
        if key not in samples.arrays:
            raise DataFormatError(path, f"lacks the tensor {key!r}")
    unknown = sorted(set(samples.arrays) - set(spec))
    if unknown:
        raise DataFormatError(path, f"unexpected tensor(s) {unknown} for {samples.modality}")
    rows = None
    for key, t in samples.arrays.items():
        dims, dtypes = spec[key]
        if t.dim() != dims:
            raise DataFormatError(
                path, f"tensor {key!r} must have {dims} dimensions, has shape {tuple(t.shape)}"
            )
        if t.dtype not in dtypes:
            raise DataFormatError(
                path, f"tensor {key!r} has dtype {t.dtype}, expected one of {dtypes}"
            )
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise DataFormatError(path, f"tensor {key!r} holds NaN or Inf")
        if rows is not None and t.shape[0] != rows:
            raise DataFormatError(path, f"tensor {key!r} has {t.shape[0]} rows, others have {rows}")
        rows = int(t.shape[0])
    if not rows:
        raise DataFormatError(path, "holds no samples")
    pixels = samples.arrays.get("pixels")
    if (
        pixels is not None
        and pixels.dtype == torch.float32
        and (pixels.min() < 0 or pixels.max() > 1)
    ):
        raise DataFormatError(path, "float32 pixels must lie in [0, 1]")
    length = samples.arrays.get("length")
    if length is not None:
        width = samples.arrays["waveform"].shape[1]
        if bool((length < 1).any()) or bool((length > width).any()):
            raise DataFormatError(path, f"tensor 'length' must lie in 1..{width}")


def read_data_folder(folder: Path) -> Samples:
    """Read and verify a data folder: manifest fields, payload hash, shapes, dtypes, count."""
    mpath = folder / MANIFEST
    manifest = _read_json(mpath)
    if manifest.get("format") != NODE_FORMAT:
        raise DataFormatError(
            mpath, f"format must be {NODE_FORMAT!r}, got {manifest.get('format')!r}"
        )
    modality = _require(manifest, "modality", str, mpath)
    if modality not in MODALITIES:
        raise DataFormatError(
            mpath, f"unknown modality {modality!r} (expected one of {MODALITIES})"
        )
    payload = folder / _require(manifest, "file", str, mpath)
    samples = _read_payload(
        payload, modality, _require(manifest, "sha256", str, mpath), manifest.get("sample_rate")
    )
    declared = _require(manifest, "samples", int, mpath)
    if declared != len(samples):
        raise DataFormatError(
            payload, f"holds {len(samples)} samples, the manifest declares {declared}"
        )
    return samples


@dataclass(frozen=True)
class AnchorSet:
    """A verified anchor set: concept order, the manifest's digest, one Samples per modality."""

    name: str
    concept_ids: tuple[str, ...]
    digest: str  # SHA-256 of manifest.json: what a coordinator announces and nodes compare
    modalities: dict[str, Samples]

    def __len__(self) -> int:
        return len(self.concept_ids)


def read_anchor_set(
    folder: Path, modalities: Sequence[str] | None = None, expected_digest: str | None = None
) -> AnchorSet:
    """Read and verify an anchor set; `modalities` limits which payloads are loaded (a node needs
    only its own) but every requested modality must be present. `expected_digest` is the digest
    the coordinator announced; a mismatch is an error."""
    mpath = folder / MANIFEST
    manifest = _read_json(mpath)
    digest = sha256_file(mpath)
    if expected_digest is not None and digest != expected_digest:
        raise DataFormatError(
            mpath, "anchor set digest differs from the one the federation announced"
        )
    if manifest.get("format") != ANCHOR_FORMAT:
        raise DataFormatError(
            mpath, f"format must be {ANCHOR_FORMAT!r}, got {manifest.get('format')!r}"
        )
    n = _require(manifest, "concepts", int, mpath)
    ids = _require(manifest, "concept_ids", list, mpath)
    if len(ids) != n or len(set(map(str, ids))) != n:
        raise DataFormatError(mpath, f"concept_ids must list {n} distinct ids")
    if n < 2:
        raise DataFormatError(mpath, "an anchor set needs at least 2 concepts")
    entries = _require(manifest, "modalities", dict, mpath)
    wanted = list(modalities) if modalities is not None else list(entries)
    loaded: dict[str, Samples] = {}
    for modality in wanted:
        if modality not in entries:
            raise DataFormatError(
                mpath, f"anchor set has no {modality!r} instances (has {sorted(entries)})"
            )
        entry = entries[modality]
        if not isinstance(entry, dict):
            raise DataFormatError(mpath, f"entry for {modality!r} must be an object")
        payload = folder / _require(entry, "file", str, mpath)
        samples = _read_payload(
            payload, modality, _require(entry, "sha256", str, mpath), entry.get("sample_rate")
        )
        if len(samples) != n:
            raise DataFormatError(
                payload, f"holds {len(samples)} rows, the anchor set has {n} concepts"
            )
        loaded[modality] = samples
    return AnchorSet(str(manifest.get("name", "")), tuple(map(str, ids)), digest, loaded)
