"""A node's own durable state between rounds, in one safetensors file (never pickle).

    local.<name>            local parameters (magnitudes)
    optim.<i>.<key>         AdamW state per parameter index (step, exp_avg, exp_avg_sq)
    rng                     the trainer's generator state
    metadata                {"round", "federation_id", "model", "node", "param_groups"}

Written after every accepted upload (temporary name, fsync, rename), so a killed node resumes
from its last accepted round; a checkpoint of another federation or model is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from common.partition import load_local_state, local_state
from node.training import LocalTrainer

FILE = "checkpoint.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file."""


@dataclass(frozen=True)
class Identity:
    node: str
    federation_id: str
    model_json: str

    @property
    def model_digest(self) -> str:
        return hashlib.sha256(self.model_json.encode()).hexdigest()


def save(folder: Path, trainer: LocalTrainer, identity: Identity, round_id: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"local.{k}": v.detach().cpu().contiguous() for k, v in local_state(trainer.model).items()
    }
    opt = trainer.optimizer.state_dict()
    for idx, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng"] = trainer.gen.get_state()
    meta = {
        "round": str(round_id),
        "node": identity.node,
        "federation_id": identity.federation_id,
        "model": identity.model_digest,
        "param_groups": json.dumps(opt["param_groups"]),
    }
    final = folder / FILE
    tmp = final.with_name(FILE + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(final)
    return final


def load(folder: Path, trainer: LocalTrainer, identity: Identity) -> int:
    """Restore the trainer; returns the round the checkpoint was written after (0: none)."""
    path = folder / FILE
    if not path.is_file():
        return 0
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    for key, want in (
        ("node", identity.node),
        ("federation_id", identity.federation_id),
        ("model", identity.model_digest),
    ):
        if meta.get(key) != want:
            raise CheckpointError(
                f"{path}: written for another {key.replace('_', ' ')} "
                f"({meta.get(key)!r}); move it away to start this site afresh"
            )
    load_local_state(
        trainer.model, {k[len("local.") :]: v for k, v in tensors.items() if k.startswith("local.")}
    )
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    trainer.optimizer.load_state_dict(
        {"state": state, "param_groups": json.loads(meta["param_groups"])}
    )
    trainer.gen.set_state(tensors["rng"])
    return int(meta["round"])
