"""The federation's certificates: a CA, per-party keys and signing requests, signing, inspection.

Private keys are created on the machine that uses them and never leave it: a node makes a key
and a certificate signing request (CSR), sends only the CSR to the federation operator, and
gets back a certificate. Keys are written 0600 and refused when other users can read them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class CertError(ValueError):
    """A certificate or key problem; the message names the file and the problem in one line."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    if path.exists():
        raise CertError(f"{path}: exists; refusing to overwrite a private key")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def read_private_key_bytes(path: Path) -> bytes:
    """A private key's PEM bytes; CertError if missing, unreadable, or readable by other users."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CertError(f"{path}: private key file is missing") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CertError(
            f"{path}: private key is accessible to other users (mode {stat.S_IMODE(mode):o}); run chmod 600"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertError(f"{path}: private key is unreadable ({exc.strerror})") from None


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(read_private_key_bytes(path), password=None)
    except ValueError:
        raise CertError(f"{path}: not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{path}: expected an EC private key")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise CertError(f"{path}: certificate file is missing") from None
    except ValueError:
        raise CertError(f"{path}: not a PEM certificate") from None


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(
    folder: Path, name: str = "Rosetta federation CA", days: int = 3650
) -> tuple[Path, Path]:
    """ca.key (0600) and a self-signed ca.crt in `folder`."""
    key = _new_key()
    subject = _name(name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(folder / "ca.key", _key_pem(key))
    (folder / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder / "ca.key", folder / "ca.crt"


def _san(hosts: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def create_request(folder: Path, name: str, hosts: Sequence[str] = ()) -> tuple[Path, Path]:
    """<name>.key (0600) and <name>.csr: run where the key will be used."""
    if not name or "/" in name:
        raise CertError(f"invalid party name {name!r}")
    key = _new_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(name))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    _write_private(folder / f"{name}.key", _key_pem(key))
    (folder / f"{name}.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return folder / f"{name}.key", folder / f"{name}.csr"


def sign_request(
    ca_folder: Path, csr_path: Path, out: Path, days: int = 365, server: bool = False
) -> Path:
    """Sign a CSR with the CA: a client certificate, or a server one (`server`: SANs required)."""
    ca_key = load_private_key(ca_folder / "ca.key")
    ca_cert = load_certificate(ca_folder / "ca.crt")
    try:
        csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    except FileNotFoundError:
        raise CertError(f"{csr_path}: signing request file is missing") from None
    except ValueError:
        raise CertError(f"{csr_path}: not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise CertError(f"{csr_path}: the request's signature is invalid")
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(san.value, critical=False)
    except x509.ExtensionNotFound:
        if server:
            raise CertError(
                f"{csr_path}: a server certificate needs host names (request it with --host)"
            ) from None
    cert = builder.sign(ca_key, hashes.SHA256())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    hosts: tuple[str, ...]
    is_ca: bool
    sha256: str


def describe(path: Path) -> CertInfo:
    cert = load_certificate(path)
    try:
        hosts = tuple(
            str(v)
            for v in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        hosts = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        hosts=hosts,
        is_ca=is_ca,
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def common_name(cert_pem: bytes) -> str:
    """The CN of a PEM certificate: a party's identity in the federation."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise CertError("certificate has no common name")
    return str(names[0].value)


def check_own_certificate(
    cert_path: Path, ca_path: Path, key_path: Path, name: str | None = None
) -> None:
    """Before a daemon connects: its certificate is signed by the federation CA, valid now,
    matches its key and (for a node) carries its configured name. CertError otherwise, so a
    misconfigured site fails at start with one line instead of retrying a refused handshake."""
    cert, ca = load_certificate(cert_path), load_certificate(ca_path)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertError(f"{cert_path}: not signed by the federation CA in {ca_path}") from None
    now = _now()
    if now < cert.not_valid_before_utc:
        raise CertError(f"{cert_path}: not valid before {cert.not_valid_before_utc.isoformat()}")
    if now > cert.not_valid_after_utc:
        raise CertError(f"{cert_path}: expired on {cert.not_valid_after_utc.isoformat()}")
    key = load_private_key(key_path)
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise CertError(f"{key_path}: key does not belong to the certificate {cert_path}")
    if name is not None:
        cn = common_name(cert.public_bytes(serialization.Encoding.PEM))
        if cn != name:
            raise CertError(f"{cert_path}: certificate is for {cn!r}, this node is named {name!r}")
