"""The committed generated protocol code is what `make proto` produces from the .proto."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("federation_pb2.py", "federation_pb2.pyi", "federation_pb2_grpc.py")


def test_generated_code_is_current(tmp_path):
    (tmp_path / "proto" / "rosetta" / "v1").mkdir(parents=True)
    source = REPO / "proto" / "rosetta" / "v1" / "federation.proto"
    (tmp_path / "proto" / "rosetta" / "v1" / "federation.proto").write_bytes(source.read_bytes())
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.", "--pyi_out=.", "--grpc_python_out=.",
         "proto/rosetta/v1/federation.proto"],
        cwd=tmp_path, check=True,
    )  # fmt: skip
    for name in GENERATED:
        fresh = (tmp_path / "proto" / "rosetta" / "v1" / name).read_bytes()
        committed = (REPO / "proto" / "rosetta" / "v1" / name).read_bytes()
        assert fresh == committed, f"{name} is stale: run 'make proto'"


def test_no_message_has_a_field_for_samples_or_embeddings():
    from proto.rosetta.v1 import federation_pb2 as pb

    forbidden = (
        "sample",
        "embedding",
        "prototype",
        "magnitude",
        "image",
        "audio",
        "text",
        "pixel",
        "feature",
    )
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        for f in message.fields:
            if f.name in ("sample_count", "sample_count_bucket"):
                continue  # scalars: how many, never what
            assert not any(word in f.name for word in forbidden), f"{message.name}.{f.name}"
