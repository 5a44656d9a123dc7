"""All conversion between tensors and protocol messages (proto/rosetta/v1), in one place.

Tensors travel as float32 little-endian TensorPiece messages of at most `max_piece_bytes`
each, followed by a Trailer holding the SHA-256 of every piece's data in order. The
assembler accepts only the payload kinds allowed in its direction, checks shapes, offsets,
size caps and the checksum, and yields nothing unless the whole transfer is intact.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from common.alignment import pack_upper, unpack_upper
from proto.rosetta.v1 import federation_pb2 as pb

DEFAULT_MAX_PIECE_BYTES = 1 << 20  # 1 MiB per message
DEFAULT_MAX_TRANSFER_BYTES = 256 << 20  # per upload or task
GRAM_NAME = "gram"
UPLOAD_KINDS = frozenset(
    {pb.PAYLOAD_KIND_DELTA, pb.PAYLOAD_KIND_PRECISION, pb.PAYLOAD_KIND_GRAM_UPPER}
)
TASK_KINDS = frozenset({pb.PAYLOAD_KIND_GLOBAL_STATE, pb.PAYLOAD_KIND_GRAM_UPPER})


class WireError(ValueError):
    """A malformed transfer; the message names the problem.

    reason "malformed" becomes INVALID_ARGUMENT, "too_large" (a size cap) RESOURCE_EXHAUSTED.
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


def tensor_pieces(
    kind: pb.PayloadKind, name: str, tensor: Tensor, max_piece_bytes: int = DEFAULT_MAX_PIECE_BYTES
) -> Iterator[pb.TensorPiece]:
    """One tensor as float32 pieces of at most max_piece_bytes (a scalar or empty tensor is one piece)."""
    if max_piece_bytes < 4:
        raise ValueError("max_piece_bytes must be at least 4")
    flat = tensor.detach().to(torch.float32).cpu().contiguous().reshape(-1).numpy().astype("<f4")
    per = max_piece_bytes // 4
    shape = list(tensor.shape)
    starts = range(0, max(flat.size, 1), per)
    for start in starts:
        yield pb.TensorPiece(
            kind=kind,
            name=name,
            shape=shape,
            offset=start,
            data=flat[start : start + per].tobytes(),
        )


@dataclass
class _Partial:
    shape: tuple[int, ...]
    values: np.ndarray
    filled: int = 0


@dataclass
class PieceAssembler:
    """Collects pieces of one transfer; `finish(trailer)` returns {kind: {name: tensor}}."""

    allowed: frozenset[int]
    max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES
    max_piece_bytes: int = DEFAULT_MAX_PIECE_BYTES
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)
    _parts: dict[tuple[int, str], _Partial] = field(default_factory=dict)
    _bytes: int = 0
    _pieces: int = 0

    def add(self, piece: pb.TensorPiece) -> None:
        if piece.kind not in self.allowed:
            raise WireError(
                f"payload kind {pb.PayloadKind.Name(piece.kind) if piece.kind in pb.PayloadKind.values() else piece.kind} is not allowed here"
            )
        if not piece.name:
            raise WireError("tensor piece without a name")
        if len(piece.data) % 4:
            raise WireError(f"piece of {piece.name!r} is not a whole number of float32 values")
        if len(piece.data) > self.max_piece_bytes:
            raise WireError(
                f"piece of {piece.name!r} exceeds the {self.max_piece_bytes}-byte message cap",
                "too_large",
            )
        self._bytes += len(piece.data)
        if self._bytes > self.max_transfer_bytes:
            raise WireError(f"transfer exceeds the {self.max_transfer_bytes}-byte cap", "too_large")
        shape = tuple(int(s) for s in piece.shape)
        if any(s < 0 for s in shape):
            raise WireError(f"tensor {piece.name!r} has a negative dimension")
        numel = math.prod(shape)
        if 4 * numel > self.max_transfer_bytes:
            raise WireError(
                f"tensor {piece.name!r} of shape {shape} exceeds the transfer cap", "too_large"
            )
        key = (piece.kind, piece.name)
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = _Partial(shape, np.empty(numel, dtype="<f4"))
        elif part.shape != shape:
            raise WireError(f"pieces of {piece.name!r} disagree on its shape")
        if piece.offset != part.filled:
            raise WireError(
                f"piece of {piece.name!r} at offset {piece.offset}, expected {part.filled}"
            )
        values = np.frombuffer(piece.data, dtype="<f4")
        if part.filled + values.size > numel:
            raise WireError(f"pieces of {piece.name!r} hold more values than its shape")
        part.values[part.filled : part.filled + values.size] = values
        part.filled += values.size
        self._hash.update(piece.data)
        self._pieces += 1

    def finish(self, trailer: pb.Trailer) -> dict[int, dict[str, Tensor]]:
        if trailer.pieces != self._pieces:
            raise WireError(f"trailer announces {trailer.pieces} pieces, {self._pieces} arrived")
        if trailer.sha256 != self._hash.digest():
            raise WireError("checksum of the transfer does not match its trailer")
        out: dict[int, dict[str, Tensor]] = {}
        for (kind, name), part in self._parts.items():
            if part.filled != part.values.size:
                raise WireError(
                    f"tensor {name!r} is incomplete ({part.filled} of {part.values.size} values)"
                )
            out.setdefault(kind, {})[name] = torch.from_numpy(part.values.copy()).reshape(
                part.shape
            )
        return out


def _trailer(pieces: list[pb.TensorPiece]) -> pb.Trailer:
    h = hashlib.sha256()
    for p in pieces:
        h.update(p.data)
    return pb.Trailer(sha256=h.digest(), pieces=len(pieces))


def _gram_from(parts: Mapping[int, Mapping[str, Tensor]]) -> Tensor | None:
    packed = parts.get(pb.PAYLOAD_KIND_GRAM_UPPER, {}).get(GRAM_NAME)
    if packed is None:
        return None
    if packed.dim() != 1:
        raise WireError("packed Gram must be one-dimensional")
    n = int((math.isqrt(8 * packed.numel() + 1) - 1) // 2)
    if n * (n + 1) // 2 != packed.numel() or n < 2:
        raise WireError(f"packed Gram of {packed.numel()} values is not an upper triangle")
    try:
        return unpack_upper(packed, n)
    except ValueError as exc:
        raise WireError(str(exc)) from None


@dataclass(frozen=True)
class UploadPayload:
    """A node's round result, as sent and as received."""

    header: pb.UploadHeader
    delta: dict[str, Tensor]
    precisions: dict[str, Tensor]
    gram: Tensor


def _named_pieces(
    kind: pb.PayloadKind, tensors: Mapping[str, Tensor], max_piece_bytes: int
) -> list[pb.TensorPiece]:
    """Pieces of every tensor of one kind, in name order."""
    out: list[pb.TensorPiece] = []
    for name, t in sorted(tensors.items()):
        out += tensor_pieces(kind, name, torch.as_tensor(t), max_piece_bytes)
    return out


def _stream(chunk: Any, header: Any, pieces: list[pb.TensorPiece]) -> Iterator[Any]:
    """header, every piece, then the trailer, as `chunk` messages (UploadChunk or TaskChunk)."""
    yield chunk(header=header)
    for p in pieces:
        yield chunk(piece=p)
    yield chunk(trailer=_trailer(pieces))


def upload_chunks(
    payload: UploadPayload, max_piece_bytes: int = DEFAULT_MAX_PIECE_BYTES
) -> Iterator[pb.UploadChunk]:
    """Header, then delta, precision and Gram pieces, then the trailer."""
    pieces = _named_pieces(pb.PAYLOAD_KIND_DELTA, payload.delta, max_piece_bytes)
    pieces += _named_pieces(pb.PAYLOAD_KIND_PRECISION, payload.precisions, max_piece_bytes)
    gram = {GRAM_NAME: pack_upper(payload.gram)}
    pieces += _named_pieces(pb.PAYLOAD_KIND_GRAM_UPPER, gram, max_piece_bytes)
    return _stream(pb.UploadChunk, payload.header, pieces)


def _assemble(
    chunks: Iterable[Any],
    allowed: frozenset[int],
    what: str,
    max_transfer_bytes: int,
    max_piece_bytes: int,
) -> tuple[Any, dict[int, dict[str, Tensor]]]:
    """(header, tensors by kind) of a header / pieces / trailer stream; WireError if broken."""
    header = None
    assembler = PieceAssembler(allowed, max_transfer_bytes, max_piece_bytes)
    for chunk in chunks:
        part = chunk.WhichOneof("part")
        if part == "header":
            if header is not None:
                raise WireError(f"{what} has two headers")
            header = chunk.header
        elif part == "piece":
            if header is None:
                raise WireError(f"{what} pieces arrived before the header")
            assembler.add(chunk.piece)
        elif part == "trailer":
            if header is None:
                raise WireError(f"{what} has no header")
            return header, assembler.finish(chunk.trailer)
        else:
            raise WireError(f"empty {what} chunk")
    raise WireError(f"{what} ended without a trailer (partial transfers never count)")


def parse_upload(
    chunks: Iterable[pb.UploadChunk],
    max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES,
    max_piece_bytes: int = DEFAULT_MAX_PIECE_BYTES,
) -> UploadPayload:
    """Reassemble an upload; WireError unless header, pieces and trailer are all intact."""
    header, parts = _assemble(chunks, UPLOAD_KINDS, "upload", max_transfer_bytes, max_piece_bytes)
    gram = _gram_from(parts)
    if gram is None:
        raise WireError("upload has no anchor Gram")
    delta, precisions = (
        parts.get(pb.PAYLOAD_KIND_DELTA, {}),
        parts.get(pb.PAYLOAD_KIND_PRECISION, {}),
    )
    return UploadPayload(header, delta, precisions, gram)


@dataclass(frozen=True)
class TaskPayload:
    """A round's task, as sent and as received."""

    header: pb.TaskHeader
    global_state: dict[str, Tensor]
    target: Tensor | None


def task_chunks(
    payload: TaskPayload, max_piece_bytes: int = DEFAULT_MAX_PIECE_BYTES
) -> Iterator[pb.TaskChunk]:
    """Header, then global-state pieces and the target Gram (if any), then the trailer."""
    pieces = _named_pieces(pb.PAYLOAD_KIND_GLOBAL_STATE, payload.global_state, max_piece_bytes)
    if payload.target is not None:
        target = {GRAM_NAME: pack_upper(payload.target)}
        pieces += _named_pieces(pb.PAYLOAD_KIND_GRAM_UPPER, target, max_piece_bytes)
    return _stream(pb.TaskChunk, payload.header, pieces)


def parse_task(
    chunks: Iterable[pb.TaskChunk],
    max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES,
    max_piece_bytes: int = DEFAULT_MAX_PIECE_BYTES,
) -> TaskPayload:
    """Reassemble a task; WireError unless intact and its header agrees with its payload."""
    header, parts = _assemble(chunks, TASK_KINDS, "task", max_transfer_bytes, max_piece_bytes)
    target = _gram_from(parts)
    if header.has_target != (target is not None):
        raise WireError("task header and target Gram disagree")
    return TaskPayload(header, parts.get(pb.PAYLOAD_KIND_GLOBAL_STATE, {}), target)
