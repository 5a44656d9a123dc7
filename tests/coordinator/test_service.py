"""The coordinator service over real gRPC and mutual TLS on loopback port 0, in-process.

Identity (certificate name vs admitted list vs claimed name), the upload checks with their
status codes, duplicate uploads, rounds committed while bad uploads are refused, metrics, and
a restart that resumes after the last committed round.
"""

import threading

import grpc
import pytest
import torch

from common.alignment import anchor_gram
from common.config import ModelConfig, from_mapping
from common.partition import modality_of
from common.tls import TlsConfig, TlsFiles, channel_credentials
from common.wire import UploadPayload, upload_chunks
from coordinator.config import CoordinatorConfig, FederationSection, ServerSection
from coordinator.daemon import CoordinatorDaemon
from coordinator.service import Coordinator, ServiceError
from coordinator.state import DiskStore, MemoryStore
from proto.rosetta.v1 import federation_pb2 as pb
from proto.rosetta.v1 import federation_pb2_grpc as pb_grpc


def make_config(tmp_path, dataset, pki, model_table, **federation):
    fed = {"rounds": 2, "min_nodes": 2, "start_nodes": 2, "local_steps": 1, "round_timeout_s": 60}
    fed.update(federation)
    return CoordinatorConfig(
        coordinator=ServerSection(
            listen="127.0.0.1:0",
            metrics_listen="127.0.0.1:0",
            state_dir=str(tmp_path / "state"),
            anchors=str(dataset / "anchors" / "k3"),
            tick_s=0.05,
            count_tls_failures=False,  # in-process: leave pytest's stderr alone
        ),
        tls=TlsConfig(
            ca=str(pki / "ca" / "ca.crt"),
            cert=str(pki / "coordinator" / "coordinator.crt"),
            key=str(pki / "coordinator" / "coordinator.key"),
        ),
        federation=FederationSection(**fed),
        nodes={"image": "image", "audio": "audio", "text": "text"},
        model=from_mapping(ModelConfig, model_table, "model"),
    )


@pytest.fixture
def served(tmp_path, tiny_dataset, pki, tiny_model_table):
    daemon = CoordinatorDaemon(make_config(tmp_path, tiny_dataset, pki, tiny_model_table))
    daemon.start()
    ticker = threading.Thread(target=daemon.serve_forever, daemon=True)
    ticker.start()
    yield daemon
    daemon.stop(grace_s=0)
    ticker.join(timeout=5)


class Client:
    def __init__(self, pki, port, name, folder=None, claim=None):
        folder = folder or name
        files = TlsFiles(
            ca=pki / "ca" / "ca.crt",
            cert=pki / folder / f"{name}.crt",
            key=pki / folder / f"{name}.key",
        )
        options = (("grpc.ssl_target_name_override", "localhost"),)
        self.channel = grpc.secure_channel(
            f"127.0.0.1:{port}", channel_credentials(files), options=options
        )
        self.stub = pb_grpc.FederationStub(self.channel)
        self.md = (("rosetta-node", claim),) if claim else ()

    def join(self, modality, digest=""):
        req = pb.JoinRequest(modality=modality, software_version="test", anchor_digest=digest)
        return self.stub.Join(req, timeout=10, metadata=self.md)

    def heartbeat(self):
        return self.stub.Heartbeat(pb.HeartbeatRequest(), timeout=10, metadata=self.md)

    def upload(self, chunks):
        return self.stub.UploadResult(iter(list(chunks)), timeout=10, metadata=self.md)


def valid_payload(coordinator, modality, round_id=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    names = [k for k in coordinator.layout if modality_of(k) in (None, modality)]
    delta = {k: 1e-3 * torch.randn(coordinator.layout[k], generator=gen) for k in names}
    precisions = {k: torch.tensor(1.0 + seed) for k in names}
    gram = anchor_gram(torch.randn(coordinator.n_anchors, 8, generator=gen).double()).float()
    header = pb.UploadHeader(
        round=round_id, sample_count=20, loss=1.0, local_cka=float("nan"), node_precision=1.0
    )
    return UploadPayload(header, delta, precisions, gram)


def code_of(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_admitted_nodes_join_and_the_round_starts(served, pki):
    image = Client(pki, served.port, "image")
    resp = image.join("image", served.coordinator.anchor_digest)
    assert resp.node_name == "image" and resp.current_round == 1
    assert resp.anchor_digest == served.coordinator.anchor_digest
    assert image.heartbeat().state == pb.ROUND_STATE_WAITING_FOR_NODES
    Client(pki, served.port, "audio").join("audio")
    assert image.heartbeat().state == pb.ROUND_STATE_TRAINING


def test_identity_refusals(served, pki):
    port = served.port
    err = code_of(lambda: Client(pki, port, "stranger").join("image"))
    assert (
        err.code() == grpc.StatusCode.PERMISSION_DENIED and "not an admitted node" in err.details()
    )
    # A valid certificate for "audio" claiming to be "image": refused.
    err = code_of(lambda: Client(pki, port, "audio", claim="image").join("image"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "certificate is for 'audio'" in err.details()
    err = code_of(lambda: Client(pki, port, "image").join("audio"))
    assert (
        err.code() == grpc.StatusCode.PERMISSION_DENIED and "admitted for 'image'" in err.details()
    )
    # Another CA's certificate never gets past the TLS handshake.
    err = code_of(lambda: Client(pki, port, "image", folder="rogue").join("image"))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    m = served.metrics.auth_rejections
    assert m.labels("unknown_node")._value.get() == 1
    assert m.labels("claimed_other_name")._value.get() == 1
    assert m.labels("wrong_modality")._value.get() == 1


def test_calls_before_join_say_so(served, pki):
    err = code_of(Client(pki, served.port, "image").heartbeat)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert dict(err.trailing_metadata())["rosetta-reason"] == "not_joined"


def test_a_different_anchor_set_is_refused(served, pki):
    err = code_of(lambda: Client(pki, served.port, "image").join("image", "0" * 64))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "anchor" in err.details()


def _bad_uploads(c, node):
    """(name, chunks, expected status) of uploads that must be refused."""
    p = valid_payload(c, "image")
    name = sorted(p.delta)[0]
    nan = UploadPayload(
        p.header, {**p.delta, name: p.delta[name] * float("nan")}, p.precisions, p.gram
    )
    shape = UploadPayload(p.header, {**p.delta, name: torch.zeros(3, 3)}, p.precisions, p.gram)
    huge = UploadPayload(p.header, {**p.delta, name: p.delta[name] + 1e3}, p.precisions, p.gram)
    gram = UploadPayload(p.header, p.delta, p.precisions, torch.eye(c.n_anchors + 1))
    bad_prec = UploadPayload(p.header, p.delta, {**p.precisions, name: torch.tensor(-1.0)}, p.gram)
    chunks = list(upload_chunks(p))
    partial = chunks[:-1]  # no trailer: a partial upload never counts
    corrupt = [
        *chunks[:-1],
        pb.UploadChunk(trailer=pb.Trailer(sha256=b"x" * 32, pieces=len(chunks) - 2)),
    ]
    big = pb.UploadChunk(
        piece=pb.TensorPiece(
            kind=pb.PAYLOAD_KIND_DELTA, name=name, shape=[1 << 20], offset=0, data=b"\0" * 4 * 1000
        )
    )
    oversized = [chunks[0], big, *chunks[1:]]
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return [
        ("nan", upload_chunks(nan), invalid),
        ("wrong shape", upload_chunks(shape), invalid),
        ("delta norm", upload_chunks(huge), invalid),
        ("gram size", upload_chunks(gram), invalid),
        ("precision", upload_chunks(bad_prec), invalid),
        ("partial", partial, invalid),
        ("checksum", corrupt, invalid),
        ("oversized", oversized, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ]


@pytest.fixture
def small_cap(tmp_path, tiny_dataset, pki, tiny_model_table):
    cfg = make_config(
        tmp_path,
        tiny_dataset,
        pki,
        tiny_model_table,
        max_upload_bytes=1 << 20,
        max_piece_bytes=1 << 14,
    )
    daemon = CoordinatorDaemon(cfg)
    daemon.start()
    yield daemon
    daemon.stop(grace_s=0)


def test_bad_uploads_are_refused_with_their_status_and_the_round_still_completes(small_cap, pki):
    c = small_cap.coordinator
    image, audio = Client(pki, small_cap.port, "image"), Client(pki, small_cap.port, "audio")
    image.join("image")
    audio.join("audio")
    for what, chunks, status in _bad_uploads(c, "image"):
        err = code_of(lambda chunks=chunks: image.upload(chunks))
        assert err.code() == status, (what, err.details())
    assert c.machine.uploaded == set() and c.aggregate.nodes == []
    assert image.upload(upload_chunks(valid_payload(c, "image"))).accepted
    err = code_of(lambda: image.upload(upload_chunks(valid_payload(c, "image"))))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    err = code_of(lambda: audio.upload(upload_chunks(valid_payload(c, "audio", round_id=2))))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert audio.upload(upload_chunks(valid_payload(c, "audio", seed=1))).accepted
    assert c.machine.completed_rounds == 1 and small_cap.store.rounds() == [1]
    rejected = small_cap.metrics.uploads_rejected
    for reason in (
        "non_finite",
        "wrong_shape",
        "delta_norm",
        "too_large",
        "duplicate",
        "wrong_round",
    ):
        assert rejected.labels(reason)._value.get() >= 1, reason
    assert small_cap.metrics.uploads_accepted._value.get() == 2


def test_the_task_carries_the_global_state_and_after_round_one_the_target(small_cap, pki):
    from common.wire import parse_task

    c = small_cap.coordinator
    image, audio = Client(pki, small_cap.port, "image"), Client(pki, small_cap.port, "audio")
    image.join("image")
    audio.join("audio")
    task = parse_task(image.stub.GetTask(pb.GetTaskRequest(round=1), timeout=10))
    assert task.target is None and task.header.round == 1
    assert set(task.global_state) == {k for k in c.layout if modality_of(k) in (None, "image")}
    image.upload(upload_chunks(valid_payload(c, "image")))
    audio.upload(upload_chunks(valid_payload(c, "audio", seed=1)))
    task = parse_task(image.stub.GetTask(pb.GetTaskRequest(round=2), timeout=10))
    assert task.header.has_target and task.target.shape == (c.n_anchors, c.n_anchors)
    err = code_of(lambda: list(image.stub.GetTask(pb.GetTaskRequest(round=1), timeout=10)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_deadline_with_quorum_commits_and_a_restart_resumes(
    tmp_path, tiny_dataset, pki, tiny_model_table
):
    cfg = make_config(
        tmp_path, tiny_dataset, pki, tiny_model_table, rounds=3, start_nodes=3, node_timeout_s=1e9
    )
    clock = Clock()
    store = DiskStore(tmp_path / "state")
    c = Coordinator(cfg, store, clock=clock)
    for n in ("image", "audio", "text"):
        c.join(n, pb.JoinRequest(modality=n))
    c.upload("image", valid_payload(c, "image"))
    c.upload("audio", valid_payload(c, "audio", seed=1))
    c.tick()
    assert c.machine.completed_rounds == 0  # text may still come
    clock.now = cfg.federation.round_timeout_s + 1
    c.tick()  # the deadline with 2 of 3 uploads (quorum 2): the round counts
    assert c.machine.completed_rounds == 1 and store.rounds() == [1]
    committed = {k: v.clone() for k, v in c.global_state.items()}
    store.close()
    restarted = Coordinator(cfg, DiskStore(tmp_path / "state"), clock=clock)
    assert restarted.machine.round == 2 and restarted.target is not None
    assert all(torch.equal(restarted.global_state[k], v) for k, v in committed.items())
    with pytest.raises(ServiceError) as info:
        restarted.heartbeat("image", pb.HeartbeatRequest())
    assert info.value.reason == "not_joined"  # nodes re-join a restarted coordinator


def test_insecure_mode_takes_the_claimed_name_and_needs_one(
    tmp_path, tiny_dataset, pki, tiny_model_table
):
    from coordinator.servicer import FederationServicer

    cfg = make_config(tmp_path, tiny_dataset, pki, tiny_model_table)
    servicer = FederationServicer(Coordinator(cfg, MemoryStore()), insecure=True)

    class Ctx:
        def __init__(self, md):
            self.md = md

        def invocation_metadata(self):
            return self.md

        def set_trailing_metadata(self, md):
            pass

        def abort(self, code, details):
            raise RuntimeError(f"{code.name}: {details}")

    assert servicer._identity(Ctx((("rosetta-node", "image"),))) == "image"
    with pytest.raises(RuntimeError, match="UNAUTHENTICATED"):
        servicer._identity(Ctx(()))


def test_metrics_endpoint_serves_prometheus_text(served, pki):
    from rosetta.localfed import scrape

    Client(pki, served.port, "image").join("image")
    m = scrape(served.metrics_port)
    assert m["rosetta_coordinator_nodes_connected"] == 1
    assert (
        m['rosetta_coordinator_round_state{rosetta_coordinator_round_state="waiting_for_nodes"}']
        == 1
    )
    assert any(
        k.startswith("rosetta_coordinator_rpc_duration_seconds_count{") and "Join" in k for k in m
    )
    assert m["rosetta_coordinator_received_bytes_total"] > 0


def test_an_expired_client_certificate_is_refused_at_the_handshake(served, pki, tmp_path):
    import shutil
    import time

    from common import certs

    folder = tmp_path / "expired"
    _, csr = certs.create_request(folder, "image")
    certs.sign_request(pki / "ca", csr, folder / "image.crt", days=0)
    time.sleep(0.01)
    shutil.copy(pki / "ca" / "ca.crt", folder / "ca.crt")
    files = TlsFiles(ca=pki / "ca" / "ca.crt", cert=folder / "image.crt", key=folder / "image.key")
    channel = grpc.secure_channel(
        f"127.0.0.1:{served.port}",
        channel_credentials(files),
        options=(("grpc.ssl_target_name_override", "localhost"),),
    )
    stub = pb_grpc.FederationStub(channel)
    err = code_of(lambda: stub.Join(pb.JoinRequest(modality="image"), timeout=10))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_after_a_round_restart_heartbeats_ask_for_the_upload_again(
    tmp_path, tiny_dataset, pki, tiny_model_table
):
    cfg = make_config(tmp_path, tiny_dataset, pki, tiny_model_table, node_timeout_s=1e9, grace_s=5)
    clock = Clock()
    c = Coordinator(cfg, MemoryStore(), clock=clock)
    for n in ("image", "audio"):
        c.join(n, pb.JoinRequest(modality=n))
    c.upload("image", valid_payload(c, "image"))
    assert c.heartbeat("image", pb.HeartbeatRequest()).upload_received
    assert not c.heartbeat("audio", pb.HeartbeatRequest()).upload_received
    clock.now = cfg.federation.round_timeout_s + 1
    c.tick()  # no quorum: grace period
    clock.now += cfg.federation.grace_s + 1
    c.tick()  # still none: the round restarts and its uploads are dropped
    hb = c.heartbeat("image", pb.HeartbeatRequest())
    assert hb.current_round == 1 and hb.state == pb.ROUND_STATE_TRAINING
    assert not hb.upload_received and c.aggregate.nodes == []
    c.upload("image", valid_payload(c, "image"))
    c.upload("audio", valid_payload(c, "audio", seed=1))
    assert c.machine.completed_rounds == 1


def test_a_state_of_another_model_is_refused_on_restart(
    tmp_path, tiny_dataset, pki, tiny_model_table
):
    from coordinator.service import StateMismatchError

    cfg = make_config(tmp_path, tiny_dataset, pki, tiny_model_table, rounds=3)
    store = DiskStore(tmp_path / "state")
    c = Coordinator(cfg, store)
    for n in ("image", "audio"):
        c.join(n, pb.JoinRequest(modality=n))
    c.upload("image", valid_payload(c, "image"))
    c.upload("audio", valid_payload(c, "audio", seed=1))
    store.close()
    other = {**tiny_model_table, "adapter": {"rank": 2, "alpha": 4.0}}
    cfg2 = make_config(tmp_path, tiny_dataset, pki, other, rounds=3)
    with pytest.raises(StateMismatchError, match="another model's state"):
        Coordinator(cfg2, DiskStore(tmp_path / "state"))
