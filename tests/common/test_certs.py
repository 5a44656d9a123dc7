"""Certificates: CA, request, sign, show; keys stay private and unsafe keys are refused."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from common import certs

REPO = Path(__file__).resolve().parents[2]


def test_ca_request_sign_chain_verifies(tmp_path):
    certs.create_ca(tmp_path / "ca")
    key, csr = certs.create_request(tmp_path / "node", "hospital-a")
    crt = certs.sign_request(tmp_path / "ca", csr, tmp_path / "node" / "hospital-a.crt")
    ca = certs.load_certificate(tmp_path / "ca" / "ca.crt")
    leaf = certs.load_certificate(crt)
    leaf.verify_directly_issued_by(ca)
    assert certs.common_name(crt.read_bytes()) == "hospital-a"
    assert (
        os.stat(key).st_mode & 0o777 == 0o600
        and os.stat(tmp_path / "ca" / "ca.key").st_mode & 0o777 == 0o600
    )
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage


def test_server_certificate_carries_its_hosts(tmp_path):
    certs.create_ca(tmp_path / "ca")
    _, csr = certs.create_request(tmp_path / "srv", "coordinator", ["localhost", "127.0.0.1"])
    info = certs.describe(
        certs.sign_request(tmp_path / "ca", csr, tmp_path / "srv.crt", server=True)
    )
    assert "DNSName(value='localhost')" in " ".join(info.hosts) and not info.is_ca
    _, bare = certs.create_request(tmp_path / "bare", "nohosts")
    with pytest.raises(certs.CertError, match="needs host names"):
        certs.sign_request(tmp_path / "ca", bare, tmp_path / "x.crt", server=True)


def test_world_readable_missing_and_overwritten_keys_are_refused(tmp_path):
    key, _ = certs.create_request(tmp_path, "n")
    os.chmod(key, 0o644)
    with pytest.raises(certs.CertError, match="accessible to other users"):
        certs.read_private_key_bytes(key)
    with pytest.raises(certs.CertError, match="missing"):
        certs.read_private_key_bytes(tmp_path / "absent.key")
    with pytest.raises(certs.CertError, match="refusing to overwrite"):
        certs.create_request(tmp_path, "n")


def test_cli_flow_and_one_line_errors(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "rosetta.cli", "certs", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
        )

    assert run("init-ca", "--out", str(tmp_path / "ca")).returncode == 0
    assert run("request", "--name", "lab", "--out", str(tmp_path / "lab")).returncode == 0
    signed = run(
        "sign",
        "--ca",
        str(tmp_path / "ca"),
        "--csr",
        str(tmp_path / "lab" / "lab.csr"),
        "--out",
        str(tmp_path / "lab.crt"),
    )
    assert signed.returncode == 0, signed.stderr
    shown = run("show", str(tmp_path / "lab.crt"))
    assert (
        shown.returncode == 0
        and "CN=lab" in shown.stdout
        and "CN=Rosetta federation CA" in shown.stdout
    )
    bad = run("show", str(tmp_path / "nope.crt"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing" in bad.stderr


def _party(tmp_path, ca, name, days=365):
    key, csr = certs.create_request(tmp_path / f"{name}-{ca.name}", name)
    return certs.sign_request(ca, csr, key.with_suffix(".crt"), days=days), key


def test_own_certificate_check_names_each_problem(tmp_path):
    import time

    certs.create_ca(tmp_path / "ca")
    certs.create_ca(tmp_path / "other", name="Other CA")
    ca = tmp_path / "ca" / "ca.crt"
    good, key = _party(tmp_path, tmp_path / "ca", "site")
    certs.check_own_certificate(good, ca, key, "site")
    with pytest.raises(certs.CertError, match="for 'site', this node is named 'other-site'"):
        certs.check_own_certificate(good, ca, key, "other-site")
    rogue, rogue_key = _party(tmp_path, tmp_path / "other", "site")
    with pytest.raises(certs.CertError, match="not signed by the federation CA"):
        certs.check_own_certificate(rogue, ca, rogue_key, "site")
    with pytest.raises(certs.CertError, match="key does not belong"):
        certs.check_own_certificate(good, ca, rogue_key, "site")
    expired, expired_key = _party(tmp_path, tmp_path / "ca", "late", days=0)
    time.sleep(0.01)
    with pytest.raises(certs.CertError, match="expired on"):
        certs.check_own_certificate(expired, ca, expired_key, "late")
