"""gRPC credentials from the federation's files: mutual TLS on both sides, secure by default.

The coordinator requires a client certificate signed by the federation CA; a node verifies the
coordinator's server certificate against the same CA. Keys are read through
common.certs.read_private_key_bytes, which refuses missing, unreadable or exposed keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from common.certs import CertError, read_private_key_bytes


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """PEM files of one party: the federation CA, its certificate and its private key."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) bytes; CertError naming the file when one is missing or unsafe."""
        out = []
        for path in (self.ca, self.cert):
            try:
                out.append(path.read_bytes())
            except FileNotFoundError:
                raise CertError(f"{path}: missing") from None
            except OSError as exc:
                raise CertError(f"{path}: unreadable ({exc.strerror})") from None
        return out[0], out[1], read_private_key_bytes(self.key)


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server side: present our certificate, require a client certificate from the CA."""
    ca, cert, key = files.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Client side: verify the server against the CA and present our certificate."""
    ca, cert, key = files.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """The [tls] table of a daemon's config: paths of the CA, certificate and key (PEM)."""

    ca: str = ""
    cert: str = ""
    key: str = ""

    def files(self) -> TlsFiles:
        missing = [k for k in ("ca", "cert", "key") if not getattr(self, k)]
        if missing:
            raise CertError(f"[tls] needs {', '.join(missing)} (or run with --insecure)")
        return TlsFiles(ca=Path(self.ca), cert=Path(self.cert), key=Path(self.key))
