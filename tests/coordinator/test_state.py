"""One contract suite for every state store; crash and corruption cases for the disk store."""

import subprocess
import sys
import textwrap

import pytest
import torch

from coordinator.state import CompletedRound, DiskStore, MemoryStore, same_state


@pytest.fixture(params=["memory", "disk"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else DiskStore(tmp_path / "state")
    yield s
    if isinstance(s, DiskStore):
        s.close()


def _round(n, target=True):
    state = {
        "backbone.l.lora_b": torch.full((3, 2), float(n)),
        "tokenizers.image.proj.bias": torch.arange(4.0) * n,
    }
    return CompletedRound(n, state, torch.eye(3) * n if target else None, {"nodes": n})


def test_empty_store_has_no_latest_round(store):
    assert store.latest() is None and store.rounds() == []


def test_latest_is_the_last_committed_round(store):
    store.commit_round(_round(1, target=False))
    store.commit_round(_round(2))
    latest = store.latest()
    assert latest.round == 2 and same_state(latest.global_state, _round(2).global_state)
    assert torch.equal(latest.target, torch.eye(3) * 2) and latest.summary == {"nodes": 2}
    assert store.rounds() == [1, 2]


def test_rounds_must_increase(store):
    store.commit_round(_round(3))
    with pytest.raises(ValueError, match="not after"):
        store.commit_round(_round(3))


def test_disk_store_survives_reopening_and_prunes(tmp_path):
    s = DiskStore(tmp_path / "st", keep_last=2)
    for n in (1, 2, 3):
        s.commit_round(_round(n))
    s.close()
    again = DiskStore(tmp_path / "st", keep_last=2)
    assert again.rounds() == [2, 3] and again.latest().round == 3
    assert sorted(p.name for p in (tmp_path / "st" / "rounds").iterdir()) == [
        "round-000002.safetensors",
        "round-000003.safetensors",
    ]


def test_a_process_killed_mid_commit_loses_no_completed_round(tmp_path):
    folder = tmp_path / "st"
    s = DiskStore(folder)
    s.commit_round(_round(1))
    s.close()
    # A second process writes round 2's file and is SIGKILLed before recording it.
    script = textwrap.dedent(f"""
        import os, signal, torch
        from pathlib import Path
        from safetensors.torch import save_file
        save_file({{"x": torch.ones(2)}}, str(Path({str(folder)!r}) / "rounds" / "round-000002.safetensors.tmp"))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    reopened = DiskStore(folder)
    assert reopened.latest().round == 1 and not list((folder / "rounds").glob("*.tmp"))


def test_a_corrupted_round_file_is_reported(tmp_path):
    s = DiskStore(tmp_path / "st")
    s.commit_round(_round(1))
    (tmp_path / "st" / "rounds" / "round-000001.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt state"):
        s.latest()
