"""Tensor <-> protocol conversion: round trips across chunk sizes, and every broken transfer."""

import math

import pytest
import torch

from common.alignment import anchor_gram
from common.wire import (
    TaskPayload,
    UploadPayload,
    WireError,
    parse_task,
    parse_upload,
    task_chunks,
    upload_chunks,
)
from proto.rosetta.v1 import federation_pb2 as pb


def _upload():
    gen = torch.Generator().manual_seed(0)
    delta = {
        "backbone.a.lora_b": torch.randn(7, 3, generator=gen),
        "tokenizers.image.proj.bias": torch.randn(5, generator=gen),
    }
    precisions = {
        "backbone.a.lora_b": torch.tensor(2.5),
        "tokenizers.image.proj.bias": torch.rand(5, generator=gen),
    }
    gram = anchor_gram(torch.randn(6, 4, generator=gen))
    header = pb.UploadHeader(round=3, sample_count=100, loss=1.5, local_cka=0.7, node_precision=4.0)
    return UploadPayload(header, delta, precisions, gram)


@pytest.mark.parametrize("piece_bytes", [4, 12, 64, 1 << 20])
def test_upload_round_trip_at_any_piece_size(piece_bytes):
    sent = _upload()
    got = parse_upload(upload_chunks(sent, piece_bytes), max_piece_bytes=max(piece_bytes, 4))
    assert got.header == sent.header
    assert (
        all(torch.equal(got.delta[k], v) for k, v in sent.delta.items())
        and got.delta.keys() == sent.delta.keys()
    )
    assert all(
        torch.equal(got.precisions[k], torch.as_tensor(v).float())
        for k, v in sent.precisions.items()
    )
    assert torch.equal(got.gram, sent.gram)


def test_task_round_trip_with_and_without_target():
    state = {"backbone.a.lora_b": torch.arange(12.0).reshape(4, 3)}
    target = anchor_gram(torch.randn(5, 2))
    for t in (target, None):
        header = pb.TaskHeader(
            round=2, local_steps=10, cka_weight=1.0, anchors=5, has_target=t is not None
        )
        got = parse_task(task_chunks(TaskPayload(header, state, t), 16))
        assert torch.equal(got.global_state["backbone.a.lora_b"], state["backbone.a.lora_b"])
        assert (got.target is None) == (t is None) and (t is None or torch.equal(got.target, t))


def _chunks(piece_bytes=16):
    return list(upload_chunks(_upload(), piece_bytes))


def test_a_partial_upload_never_counts():
    with pytest.raises(WireError, match="without a trailer"):
        parse_upload(_chunks()[:-1])


def test_a_corrupted_piece_fails_the_checksum():
    chunks = _chunks()
    chunks[2].piece.data = bytes(len(chunks[2].piece.data))
    with pytest.raises(WireError, match="checksum"):
        parse_upload(chunks)


def test_reordered_pieces_are_rejected():
    chunks = _chunks()
    chunks[1], chunks[2] = chunks[2], chunks[1]
    with pytest.raises(WireError, match="offset"):
        parse_upload(chunks)


def test_caps_per_message_and_per_transfer():
    with pytest.raises(WireError, match="message cap"):
        parse_upload(_chunks(1 << 20), max_piece_bytes=16)
    with pytest.raises(WireError, match=r"transfer cap|transfer exceeds"):
        parse_upload(_chunks(), max_transfer_bytes=32)


def test_payload_kinds_are_direction_specific():
    state_piece = pb.TensorPiece(
        kind=pb.PAYLOAD_KIND_GLOBAL_STATE, name="x", shape=[1], offset=0, data=b"\0\0\0\0"
    )
    chunks = [pb.UploadChunk(header=pb.UploadHeader(round=1)), pb.UploadChunk(piece=state_piece)]
    with pytest.raises(WireError, match="not allowed"):
        parse_upload(chunks)


def test_structure_errors_are_named():
    chunks = _chunks()
    with pytest.raises(WireError, match="before the header"):
        parse_upload(chunks[1:])
    with pytest.raises(WireError, match="two headers"):
        parse_upload([chunks[0], *chunks])
    trailer = chunks[-1]
    trailer.trailer.pieces += 1
    with pytest.raises(WireError, match="announces"):
        parse_upload(chunks)


def test_an_upload_without_a_gram_is_rejected():
    sent = _upload()
    chunks = [
        c
        for c in upload_chunks(sent, 1 << 20)
        if not (c.WhichOneof("part") == "piece" and c.piece.kind == pb.PAYLOAD_KIND_GRAM_UPPER)
    ]
    from common.wire import _trailer

    chunks[-1] = pb.UploadChunk(
        trailer=_trailer([c.piece for c in chunks if c.WhichOneof("part") == "piece"])
    )
    with pytest.raises(WireError, match="no anchor Gram"):
        parse_upload(chunks)


def test_piece_count_of_a_large_tensor():
    sent = UploadPayload(
        pb.UploadHeader(round=1),
        {"w": torch.zeros(1000)},
        {"w": torch.tensor(1.0)},
        anchor_gram(torch.randn(3, 2)),
    )
    pieces = [c for c in upload_chunks(sent, 400) if c.WhichOneof("part") == "piece"]
    assert sum(
        1 for p in pieces if p.piece.name == "w" and p.piece.kind == pb.PAYLOAD_KIND_DELTA
    ) == math.ceil(4000 / 400)
