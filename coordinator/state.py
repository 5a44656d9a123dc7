"""The coordinator's durable state behind one interface: completed rounds only.

A round counts once `commit_round` returns. The disk store writes the round's tensors to a
safetensors file (temporary name, fsync, rename), then records the round in SQLite in one
transaction; a crash at any point leaves the last fully committed round as `latest()`.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

TARGET_KEY = "__target__"


@dataclass(frozen=True)
class CompletedRound:
    round: int
    global_state: dict[str, Tensor]
    target: Tensor | None
    summary: dict[str, Any] = field(default_factory=dict)
    completed_at: float = 0.0


class StateStore(abc.ABC):
    """Completed rounds, newest last. Implementations share tests/coordinator/test_state.py."""

    @abc.abstractmethod
    def latest(self) -> CompletedRound | None:
        """The newest completed round, or None before the first."""

    @abc.abstractmethod
    def commit_round(self, completed: CompletedRound) -> None:
        """Make a round durable; rounds must increase. Returns only when it is committed."""

    @abc.abstractmethod
    def rounds(self) -> list[int]:
        """Numbers of the completed rounds that are kept, ascending."""

    def _check_order(self, completed: CompletedRound) -> None:
        last = self.rounds()
        if last and completed.round <= last[-1]:
            raise ValueError(
                f"round {completed.round} is not after the last completed round {last[-1]}"
            )


class MemoryStore(StateStore):
    """For tests and throwaway runs: nothing survives the process."""

    def __init__(self) -> None:
        self._rounds: list[CompletedRound] = []

    def latest(self) -> CompletedRound | None:
        return self._rounds[-1] if self._rounds else None

    def commit_round(self, completed: CompletedRound) -> None:
        self._check_order(completed)
        self._rounds.append(completed)

    def rounds(self) -> list[int]:
        return [r.round for r in self._rounds]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskStore(StateStore):
    """SQLite index + one safetensors file per round; keeps the newest `keep_last` files."""

    def __init__(self, folder: Path, keep_last: int = 5) -> None:
        if keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        self.folder, self.keep_last = folder, keep_last
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rounds").mkdir(exist_ok=True)
        # One connection shared by the server's threads; callers serialise (the coordinator's lock).
        self._db = sqlite3.connect(
            folder / "state.db", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rounds (round INTEGER PRIMARY KEY, file TEXT NOT NULL, "
            "sha256 TEXT NOT NULL, completed_at REAL NOT NULL, summary TEXT NOT NULL)"
        )
        for stale in (folder / "rounds").glob("*.tmp"):  # a crash mid-write left these
            stale.unlink()

    def close(self) -> None:
        self._db.close()

    def _file(self, rnd: int) -> Path:
        return self.folder / "rounds" / f"round-{rnd:06d}.safetensors"

    def commit_round(self, completed: CompletedRound) -> None:
        self._check_order(completed)
        tensors: dict[str, Tensor] = {
            k: v.detach().cpu().contiguous() for k, v in completed.global_state.items()
        }
        if completed.target is not None:
            tensors[TARGET_KEY] = completed.target.detach().cpu().contiguous()
        final = self._file(completed.round)
        tmp = final.with_name(final.name + ".tmp")
        save_file(tensors, str(tmp))
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
            digest = hashlib.sha256(f.read()).hexdigest()
        tmp.replace(final)
        _fsync_dir(final.parent)
        self._db.execute(
            "INSERT INTO rounds VALUES (?, ?, ?, ?, ?)",
            (
                completed.round,
                final.name,
                digest,
                completed.completed_at or time.time(),
                json.dumps(completed.summary, default=float),
            ),
        )
        self._prune()

    def _prune(self) -> None:
        rows = self._db.execute("SELECT round, file FROM rounds ORDER BY round DESC").fetchall()
        for rnd, name in rows[self.keep_last :]:
            (self.folder / "rounds" / name).unlink(missing_ok=True)
            self._db.execute("DELETE FROM rounds WHERE round = ?", (rnd,))

    def rounds(self) -> list[int]:
        return [r for (r,) in self._db.execute("SELECT round FROM rounds ORDER BY round")]

    def latest(self) -> CompletedRound | None:
        row = self._db.execute(
            "SELECT round, file, sha256, completed_at, summary FROM rounds ORDER BY round DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        rnd, name, digest, completed_at, summary = row
        path = self.folder / "rounds" / name
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(
                f"{path}: content hash does not match the state database (corrupt state)"
            )
        tensors = load_file(str(path))
        target = tensors.pop(TARGET_KEY, None)
        return CompletedRound(
            int(rnd), dict(tensors), target, json.loads(summary), float(completed_at)
        )


def same_state(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> bool:
    """Equal key sets and bitwise-equal tensors."""
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
