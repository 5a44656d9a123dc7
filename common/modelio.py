"""The exported model: global shared state (safetensors) + a JSON description; site magnitudes.

    DIR/model.json            {"format": "rosetta.model.v1", "model": <ModelConfig>, "round": n, ...}
    DIR/shared.safetensors    global B factors and every modality's tokenizer
    DIR/sites/<node>.safetensors   optional: a site's local magnitudes (its own site model)

The frozen base weights are not stored: every party loads the same packaged backbone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from common.config import ModelConfig, from_mapping
from common.dataformat import DataFormatError, sha256_file

MODEL_FORMAT = "rosetta.model.v1"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def save_model(
    folder: Path,
    cfg: ModelConfig,
    shared: Mapping[str, Tensor],
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write the global model; files are replaced atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "shared.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in shared.items()}, str(tmp))
    tmp.replace(folder / "shared.safetensors")
    doc = {
        "format": MODEL_FORMAT,
        "model": dataclasses.asdict(cfg),
        "shared_sha256": sha256_file(folder / "shared.safetensors"),
        **(meta or {}),
    }
    _atomic_write_bytes(
        folder / "model.json", (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    )


def load_model(folder: Path) -> tuple[ModelConfig, dict[str, Tensor], dict[str, Any]]:
    """(config, global shared state, the description) of an exported model; verified."""
    path = folder / "model.json"
    if not path.is_file():
        raise DataFormatError(path, "missing (not an exported Rosetta model)")
    doc = json.loads(path.read_text())
    if doc.get("format") != MODEL_FORMAT:
        raise DataFormatError(path, f"format must be {MODEL_FORMAT!r}")
    weights = folder / "shared.safetensors"
    if not weights.is_file():
        raise DataFormatError(weights, "missing")
    if sha256_file(weights) != doc.get("shared_sha256"):
        raise DataFormatError(weights, "content hash does not match model.json")
    cfg = from_mapping(ModelConfig, doc["model"], "model")
    return cfg, load_file(str(weights)), doc


def save_site(folder: Path, node: str, local: Mapping[str, Tensor]) -> None:
    """A site's local state (magnitudes), next to the exported model."""
    (folder / "sites").mkdir(parents=True, exist_ok=True)
    tmp = folder / "sites" / f"{node}.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in local.items()}, str(tmp))
    tmp.replace(folder / "sites" / f"{node}.safetensors")


def load_site(folder: Path, node: str) -> dict[str, Tensor]:
    path = folder / "sites" / f"{node}.safetensors"
    if not path.is_file():
        raise DataFormatError(path, "missing (no such site in this model)")
    return load_file(str(path))
