from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_KIND_UNSPECIFIED: _ClassVar[PayloadKind]
    PAYLOAD_KIND_DELTA: _ClassVar[PayloadKind]
    PAYLOAD_KIND_PRECISION: _ClassVar[PayloadKind]
    PAYLOAD_KIND_GRAM_UPPER: _ClassVar[PayloadKind]
    PAYLOAD_KIND_GLOBAL_STATE: _ClassVar[PayloadKind]

class RoundState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_STATE_UNSPECIFIED: _ClassVar[RoundState]
    ROUND_STATE_WAITING_FOR_NODES: _ClassVar[RoundState]
    ROUND_STATE_TRAINING: _ClassVar[RoundState]
    ROUND_STATE_AGGREGATING: _ClassVar[RoundState]
    ROUND_STATE_DONE: _ClassVar[RoundState]
PAYLOAD_KIND_UNSPECIFIED: PayloadKind
PAYLOAD_KIND_DELTA: PayloadKind
PAYLOAD_KIND_PRECISION: PayloadKind
PAYLOAD_KIND_GRAM_UPPER: PayloadKind
PAYLOAD_KIND_GLOBAL_STATE: PayloadKind
ROUND_STATE_UNSPECIFIED: RoundState
ROUND_STATE_WAITING_FOR_NODES: RoundState
ROUND_STATE_TRAINING: RoundState
ROUND_STATE_AGGREGATING: RoundState
ROUND_STATE_DONE: RoundState

class TensorPiece(_message.Message):
    __slots__ = ("kind", "name", "shape", "offset", "data")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    kind: PayloadKind
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    data: bytes
    def __init__(self, kind: _Optional[_Union[PayloadKind, str]] = ..., name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Trailer(_message.Message):
    __slots__ = ("sha256", "pieces")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PIECES_FIELD_NUMBER: _ClassVar[int]
    sha256: bytes
    pieces: int
    def __init__(self, sha256: _Optional[bytes] = ..., pieces: _Optional[int] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("modality", "sample_count_bucket", "software_version", "anchor_digest")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_BUCKET_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_DIGEST_FIELD_NUMBER: _ClassVar[int]
    modality: str
    sample_count_bucket: int
    software_version: str
    anchor_digest: str
    def __init__(self, modality: _Optional[str] = ..., sample_count_bucket: _Optional[int] = ..., software_version: _Optional[str] = ..., anchor_digest: _Optional[str] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("node_name", "federation_id", "anchor_digest", "model_config_json", "current_round")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ROUND_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    federation_id: str
    anchor_digest: str
    model_config_json: str
    current_round: int
    def __init__(self, node_name: _Optional[str] = ..., federation_id: _Optional[str] = ..., anchor_digest: _Optional[str] = ..., model_config_json: _Optional[str] = ..., current_round: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("last_round_completed",)
    LAST_ROUND_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    last_round_completed: int
    def __init__(self, last_round_completed: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("current_round", "state", "seconds_to_deadline", "upload_received")
    CURRENT_ROUND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_TO_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    current_round: int
    state: RoundState
    seconds_to_deadline: float
    upload_received: bool
    def __init__(self, current_round: _Optional[int] = ..., state: _Optional[_Union[RoundState, str]] = ..., seconds_to_deadline: _Optional[float] = ..., upload_received: _Optional[bool] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class TaskHeader(_message.Message):
    __slots__ = ("round", "local_steps", "cka_weight", "anchors", "has_target", "deadline_unix_seconds")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    CKA_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ANCHORS_FIELD_NUMBER: _ClassVar[int]
    HAS_TARGET_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    round: int
    local_steps: int
    cka_weight: float
    anchors: int
    has_target: bool
    deadline_unix_seconds: float
    def __init__(self, round: _Optional[int] = ..., local_steps: _Optional[int] = ..., cka_weight: _Optional[float] = ..., anchors: _Optional[int] = ..., has_target: _Optional[bool] = ..., deadline_unix_seconds: _Optional[float] = ...) -> None: ...

class TaskChunk(_message.Message):
    __slots__ = ("header", "piece", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PIECE_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: TaskHeader
    piece: TensorPiece
    trailer: Trailer
    def __init__(self, header: _Optional[_Union[TaskHeader, _Mapping]] = ..., piece: _Optional[_Union[TensorPiece, _Mapping]] = ..., trailer: _Optional[_Union[Trailer, _Mapping]] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("round", "sample_count", "loss", "local_cka", "node_precision")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_CKA_FIELD_NUMBER: _ClassVar[int]
    NODE_PRECISION_FIELD_NUMBER: _ClassVar[int]
    round: int
    sample_count: int
    loss: float
    local_cka: float
    node_precision: float
    def __init__(self, round: _Optional[int] = ..., sample_count: _Optional[int] = ..., loss: _Optional[float] = ..., local_cka: _Optional[float] = ..., node_precision: _Optional[float] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("header", "piece", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PIECE_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    piece: TensorPiece
    trailer: Trailer
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., piece: _Optional[_Union[TensorPiece, _Mapping]] = ..., trailer: _Optional[_Union[Trailer, _Mapping]] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("accepted", "round")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    round: int
    def __init__(self, accepted: _Optional[bool] = ..., round: _Optional[int] = ...) -> None: ...
