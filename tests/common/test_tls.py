"""Mutual TLS over real gRPC on loopback port 0: the federation CA admits, any other CA is refused."""

from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common import certs
from common.tls import TlsFiles, channel_credentials, server_credentials


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    certs.create_ca(root / "ca")
    certs.create_ca(root / "rogue-ca", name="Another CA")
    _, csr = certs.create_request(root / "server", "coordinator", ["localhost", "127.0.0.1"])
    certs.sign_request(root / "ca", csr, root / "server" / "coordinator.crt", server=True)
    for ca, name in (("ca", "node-a"), ("rogue-ca", "intruder")):
        _, csr = certs.create_request(root / name, name)
        certs.sign_request(root / ca, csr, root / name / f"{name}.crt")
    return root


@pytest.fixture
def server(pki):
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), srv)
    files = TlsFiles(
        ca=pki / "ca" / "ca.crt",
        cert=pki / "server" / "coordinator.crt",
        key=pki / "server" / "coordinator.key",
    )
    port = srv.add_secure_port("127.0.0.1:0", server_credentials(files))
    srv.start()
    yield port
    srv.stop(None)


def _check(pki, port, name):
    files = TlsFiles(
        ca=pki / "ca" / "ca.crt", cert=pki / name / f"{name}.crt", key=pki / name / f"{name}.key"
    )
    options = (("grpc.ssl_target_name_override", "localhost"),)
    with grpc.secure_channel(
        f"127.0.0.1:{port}", channel_credentials(files), options=options
    ) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_a_node_with_a_federation_certificate_is_served(pki, server):
    assert _check(pki, server, "node-a").status == health_pb2.HealthCheckResponse.SERVING


def test_a_certificate_from_another_ca_is_refused(pki, server):
    with pytest.raises(grpc.RpcError) as info:
        _check(pki, server, "intruder")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_missing_or_exposed_key_is_refused_before_serving(pki, tmp_path):
    files = TlsFiles(
        ca=pki / "ca" / "ca.crt", cert=pki / "server" / "coordinator.crt", key=tmp_path / "none.key"
    )
    with pytest.raises(certs.CertError, match="missing"):
        server_credentials(files)
    exposed = tmp_path / "exposed.key"
    exposed.write_bytes((pki / "server" / "coordinator.key").read_bytes())
    exposed.chmod(0o644)
    with pytest.raises(certs.CertError, match="other users"):
        server_credentials(TlsFiles(ca=files.ca, cert=files.cert, key=exposed))
