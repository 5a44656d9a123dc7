"""Real federations of processes on loopback: coordinator and node daemons over mutual TLS,
real certificates, ports chosen by the OS. Rounds complete end to end; a wire audit shows
only allowed payloads crossed; SIGKILLed coordinators and nodes lose no completed work."""

import base64
import hashlib
import json
import signal
import subprocess
import sys

import pytest

from common.dataformat import read_data_folder
from coordinator.state import DiskStore
from proto.rosetta.v1 import federation_pb2 as pb
from rosetta.localfed import LocalFederation, scrape, wait_for

NAMES = ("image", "audio", "text", "sensor")


def make_fed(tmp_path, dataset, model_table, names=NAMES, audit=False, **federation):
    fed = {
        "rounds": 3,
        "min_nodes": 2,
        "start_nodes": len(names),
        "local_steps": 4,
        "round_timeout_s": 60,
        "grace_s": 2,
        "node_timeout_s": 5,
    }
    fed.update(federation)
    return LocalFederation(
        root=tmp_path / "fed",
        anchors=dataset / "anchors" / "k3",
        sites={n: dataset / "nodes" / "demo" / n for n in names},
        modalities={n: n for n in names},
        model=model_table,
        federation=fed,
        train={"batch_size": 8, "anchors_per_step": 0},
        node_extra={"max_samples": 60},
        audit=audit,
    )


def state_of(metrics):
    return next(
        k.split('="')[1].rstrip('"}')
        for k, v in metrics.items()
        if k.startswith("rosetta_coordinator_round_state{") and v == 1
    )


def completed(fed):
    return int(fed.coordinator_metrics()["rosetta_coordinator_last_completed_round"])


def wait_nodes_exit(fed, names, timeout=180):
    codes = {n: fed.procs[n].popen.wait(timeout=timeout) for n in names}
    assert all(c == 0 for c in codes.values()), {n: fed.procs[n].tail() for n in names}


@pytest.fixture
def running(tmp_path):
    feds = []
    yield feds
    for fed in feds:
        fed.stop_all(timeout=10)


def test_a_federation_completes_and_only_allowed_payloads_cross_the_wire(
    tmp_path, tiny_dataset, tiny_model_table, running
):
    fed = make_fed(tmp_path, tiny_dataset, tiny_model_table, audit=True)
    running.append(fed)
    fed.prepare()
    fed.start_coordinator()
    for n in NAMES:
        fed.start_node(n)
    node_port = fed.node_metrics_port("image")
    wait_for(lambda: completed(fed) >= 1, 120, "round 1")
    node_metrics = scrape(node_port)
    assert node_metrics["rosetta_node_rounds_completed_total"] >= 1
    assert node_metrics["rosetta_node_sent_bytes_total"] > 0
    assert 0.0 < node_metrics["rosetta_node_data_coverage"] <= 1.0
    wait_nodes_exit(fed, NAMES)
    m = fed.coordinator_metrics()
    assert m["rosetta_coordinator_last_completed_round"] == 3 and state_of(m) == "done"
    assert m["rosetta_coordinator_uploads_accepted_total"] == 12
    for n in NAMES:
        rounds = (fed.root / "state" / n / "rounds.jsonl").read_text().splitlines()
        assert [json.loads(r)["round"] for r in rounds] == [1, 2, 3]
        assert (fed.root / "state" / n / "model" / "sites" / f"{n}.safetensors").is_file()
    fed.stop_all()
    assert fed.procs["coordinator"].popen.returncode == 0
    # The exported global model is what `rosetta evaluate` reads.
    from rosetta.evaluate import evaluate_exported

    result = evaluate_exported(
        fed.root / "state" / "coordinator" / "model", tiny_dataset, "demo", "k3", 40
    )
    assert 0 <= result["mean_map"] <= 1 and len(result["pairs"]) == 12
    audit_wire(fed, tiny_dataset)


ALLOWED_TYPES = {
    "rosetta.v1.JoinRequest", "rosetta.v1.JoinResponse", "rosetta.v1.HeartbeatRequest",
    "rosetta.v1.HeartbeatResponse", "rosetta.v1.GetTaskRequest", "rosetta.v1.TaskChunk",
    "rosetta.v1.UploadChunk", "rosetta.v1.UploadResponse",
}  # fmt: skip


def audit_wire(fed, dataset):
    """Every recorded message is an allowed type; every tensor piece an allowed kind and shape
    for its direction; no private sample's bytes appear anywhere."""
    from common.config import ModelConfig, from_mapping
    from common.partition import shared_state
    from common.pretrained import build_model

    cfg = from_mapping(ModelConfig, fed.model, "model")
    layout = {k: list(v.shape) for k, v in shared_state(build_model(cfg)).items()}
    n_anchors = 30
    gram_len = n_anchors * (n_anchors + 1) // 2
    lines = (fed.root / "state" / "audit.jsonl").read_text().splitlines()
    assert len(lines) > 100
    blob = bytearray()
    kinds = {"in": set(), "out": set()}
    for line in lines:
        rec = json.loads(line)
        assert rec["type"] in ALLOWED_TYPES, rec["type"]
        data = base64.b64decode(rec["bytes"])
        blob += data
        cls = {"rosetta.v1.TaskChunk": pb.TaskChunk, "rosetta.v1.UploadChunk": pb.UploadChunk}.get(
            rec["type"]
        )
        if cls is None:
            continue
        msg = cls.FromString(data)
        if msg.WhichOneof("part") != "piece":
            continue
        p = msg.piece
        kinds[rec["dir"]].add(p.kind)
        if p.kind == pb.PAYLOAD_KIND_GRAM_UPPER:
            assert p.name == "gram" and list(p.shape) == [gram_len]
        else:
            assert list(p.shape) == layout[p.name] or (
                p.kind == pb.PAYLOAD_KIND_PRECISION and list(p.shape) == []
            ), (p.name, list(p.shape))
    assert kinds["in"] == {
        pb.PAYLOAD_KIND_DELTA,
        pb.PAYLOAD_KIND_PRECISION,
        pb.PAYLOAD_KIND_GRAM_UPPER,
    }
    assert kinds["out"] == {pb.PAYLOAD_KIND_GLOBAL_STATE, pb.PAYLOAD_KIND_GRAM_UPPER}
    blob = bytes(blob)
    checked = 0
    for n in NAMES:
        samples = read_data_folder(dataset / "nodes" / "demo" / n)
        for text in samples.texts[:200]:
            if len(text) >= 12:
                assert text.encode() not in blob
                checked += 1
        for key, arr in samples.arrays.items():
            if arr.dim() < 2:
                continue
            flat = arr.reshape(arr.shape[0], -1)
            for row in flat[:40]:
                mid = row.numel() // 2
                window = row[mid : mid + 16]
                for t in (window, window.float()):
                    raw = t.contiguous().numpy().tobytes()
                    if len(set(raw)) > 4:  # skip constant windows (e.g. zero padding)
                        assert raw not in blob, (n, key)
                        checked += 1
    assert checked > 200


def start_in_round_two(fed, names):
    """Start the coordinator and the nodes; return while round 2 is training."""
    fed.prepare()
    fed.start_coordinator()
    for n in names:
        fed.start_node(n)
    wait_for(
        lambda: completed(fed) >= 1 and state_of(fed.coordinator_metrics()) == "training",
        120,
        "round 2",
    )


def _file_hashes(folder):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob("*.safetensors"))
    }


def test_a_coordinator_killed_mid_round_restarts_and_loses_no_completed_round(
    tmp_path, tiny_dataset, tiny_model_table, running
):
    names = ("image", "sensor", "text")
    fed = make_fed(tmp_path, tiny_dataset, tiny_model_table, names, rounds=4, local_steps=40)
    running.append(fed)
    start_in_round_two(fed, names)
    assert fed.kill("coordinator") == -signal.SIGKILL
    state = fed.root / "state" / "coordinator"
    store = DiskStore(state)
    before = store.rounds()
    store.close()
    hashes = _file_hashes(state / "rounds")
    assert before and len(hashes) == len(before)
    fed.restart_coordinator()  # same port: the nodes reconnect by themselves
    wait_nodes_exit(fed, names)
    store = DiskStore(state)
    assert store.rounds() == [1, 2, 3, 4]
    store.close()
    after = _file_hashes(state / "rounds")
    assert all(after[name] == digest for name, digest in hashes.items())  # committed = kept
    log = fed.procs["coordinator"].log.read_text()
    assert "resumed from the last completed round" in log
    assert fed.procs["image"].log.read_text().count("INFO rosetta.node joined") >= 2  # re-joined


def test_a_node_killed_mid_round_does_not_stop_the_round_and_resumes_from_its_checkpoint(
    tmp_path, tiny_dataset, tiny_model_table, running
):
    names = ("image", "sensor", "text")
    fed = make_fed(
        tmp_path, tiny_dataset, tiny_model_table, names, rounds=4, local_steps=40,
        round_timeout_s=6, grace_s=2, node_timeout_s=3,
    )  # fmt: skip
    running.append(fed)
    start_in_round_two(fed, names)
    fed.kill("sensor")
    wait_for(lambda: completed(fed) >= 2, 60, "round 2 without the killed node")
    store = DiskStore(fed.root / "state" / "coordinator")
    summary = store.latest().summary
    store.close()
    assert "sensor" not in summary["nodes"] and len(summary["nodes"]) == 2
    ckpt = fed.root / "state" / "sensor" / "checkpoint.safetensors"
    assert ckpt.is_file()
    fed.start_node("sensor")  # a restarted node resumes from its checkpoint and rejoins
    wait_nodes_exit(fed, names)
    log = fed.procs["sensor"].log.read_text()
    assert "resumed from checkpoint" in log
    assert completed(fed) == 4


def test_a_node_stops_cleanly_on_sigterm(tmp_path, tiny_dataset, tiny_model_table, running):
    fed = make_fed(tmp_path, tiny_dataset, tiny_model_table, ("image", "sensor"))
    running.append(fed)
    fed.prepare()
    fed.start_coordinator()
    fed.start_node("image")
    wait_for(
        lambda: fed.coordinator_metrics()["rosetta_coordinator_nodes_connected"] == 1, 120, "join"
    )
    assert fed.kill("image", signal.SIGTERM) == 0
    assert "node stopped" in fed.procs["image"].log.read_text()


@pytest.mark.parametrize(
    ("cert_folder", "name", "message"),
    [
        ("rogue", "image", "not signed by the federation CA"),
        ("audio", "image", "certificate is for 'audio'"),
    ],
)
def test_a_node_with_a_wrong_certificate_fails_fast_with_one_line(
    tmp_path, tiny_dataset, tiny_model_table, pki, cert_folder, name, message
):
    fed = make_fed(tmp_path, tiny_dataset, tiny_model_table, ("image",))
    fed.root.mkdir(parents=True)
    (fed.root / "config").mkdir()
    fed.grpc_port = 1  # nothing listens: the node must fail before connecting
    config = fed.write_node_config(name)
    text = config.read_text()
    text = text.replace(str(fed.pki / "ca" / "ca.crt"), str(pki / "ca" / "ca.crt"))
    text = text.replace(
        str(fed.pki / name / f"{name}.crt"),
        str(pki / cert_folder / f"{name if cert_folder == 'rogue' else cert_folder}.crt"),
    )
    text = text.replace(
        str(fed.pki / name / f"{name}.key"),
        str(pki / cert_folder / f"{name if cert_folder == 'rogue' else cert_folder}.key"),
    )
    config.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "rosetta.cli", "node", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("rosetta:")]
    assert len(lines) == 1 and message in lines[0]


def test_refused_tls_handshakes_are_counted_and_logged(
    tmp_path, tiny_dataset, tiny_model_table, pki, running
):
    import grpc

    from common.tls import TlsFiles, channel_credentials
    from proto.rosetta.v1 import federation_pb2_grpc as pb_grpc

    fed = make_fed(tmp_path, tiny_dataset, tiny_model_table, ("image", "sensor"))
    running.append(fed)
    fed.prepare()
    fed.start_coordinator()
    files = TlsFiles(  # trusts the federation's server, presents another CA's certificate
        ca=fed.pki / "ca" / "ca.crt",
        cert=pki / "rogue" / "image.crt",
        key=pki / "rogue" / "image.key",
    )
    channel = grpc.secure_channel(
        f"127.0.0.1:{fed.grpc_port}", channel_credentials(files),
        options=(("grpc.ssl_target_name_override", "localhost"),),
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.FederationStub(channel).Join(pb.JoinRequest(modality="image"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    key = 'rosetta_coordinator_auth_rejections_total{reason="tls_handshake"}'
    wait_for(lambda: fed.coordinator_metrics().get(key, 0) >= 1, 30, "the refusal to be counted")
    assert "Handshake failed" in fed.procs["coordinator"].log.read_text()


def _run_node(config):
    return subprocess.run(
        [sys.executable, "-m", "rosetta.cli", "node", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_node_with_another_anchor_set_is_refused_with_exit_4(
    tmp_path, tiny_dataset, tiny_model_table, running
):
    fed = make_fed(tmp_path, tiny_dataset, tiny_model_table, ("image", "sensor"))
    running.append(fed)
    fed.prepare()
    fed.start_coordinator()
    proc = _run_node(fed.write_node_config("image", anchors=str(tiny_dataset / "anchors" / "k2")))
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "anchor set differs" in proc.stderr.splitlines()[-1]


def test_a_node_gives_up_after_give_up_s_with_exit_5(tmp_path, tiny_dataset, tiny_model_table):
    fed = make_fed(tmp_path, tiny_dataset, tiny_model_table, ("image",))
    fed.prepare()  # certificates and configs only: no coordinator listens
    fed.grpc_port = 1
    proc = _run_node(fed.write_node_config("image", give_up_s=2.0))
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert "unreachable for 2s" in proc.stderr.splitlines()[-1]
