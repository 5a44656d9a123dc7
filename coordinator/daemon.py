"""`rosetta coordinator --config FILE.toml`: the long-running coordinator process.

Serves rosetta.v1.Federation and the standard gRPC health service over mutual TLS, a
Prometheus endpoint, and a periodic tick for deadlines and liveness. SIGTERM or SIGINT stops
it cleanly (in-flight RPCs get a grace period); SIGKILL at any moment loses no completed round,
because a round counts only once the durable store has committed it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from common.daemon import split_listen, stop_on_signals
from common.logs import fields
from common.tls import server_credentials
from coordinator.config import CoordinatorConfig
from coordinator.metrics import CoordinatorMetrics
from coordinator.service import Coordinator
from coordinator.servicer import AuditInterceptor, FederationServicer, LatencyInterceptor
from coordinator.state import DiskStore
from proto.rosetta.v1 import federation_pb2_grpc as pb_grpc

log = logging.getLogger("rosetta.coordinator")
SERVICE_NAME = "rosetta.v1.Federation"


class AuditLog:
    """JSON lines: {"dir": "in"|"out", "method", "type", "bytes": base64 of the message}."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", buffering=1)
        self._lock = threading.Lock()

    def __call__(self, direction: str, method: str, message: Any) -> None:
        line = json.dumps(
            {
                "dir": direction,
                "method": method,
                "type": type(message).DESCRIPTOR.full_name,
                "bytes": base64.b64encode(message.SerializeToString()).decode(),
            }
        )
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        self._file.close()


class HandshakeWatch:
    """Counts TLS handshakes gRPC's core refused (another CA, expired, no certificate).

    Those refusals happen inside gRPC's C core before any Python code runs; its only trace is a
    `Handshake failed` line it writes to stderr. This tees file descriptor 2 through a pipe: every
    byte is forwarded unchanged to the original stderr, and each such line increments
    rosetta_coordinator_auth_rejections_total{reason="tls_handshake"}.
    """

    MARK = b"Handshake failed"

    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._pump, args=(read,), daemon=True)
        self._thread.start()

    def _pump(self, read: int) -> None:
        pending = b""
        while chunk := os.read(read, 65536):
            os.write(self.saved, chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if self.MARK in line:
                    self.counter.inc()
        os.close(read)

    def close(self) -> None:
        """Give stderr back (the pump ends when the pipe's last writer is gone)."""
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        self._thread.join(timeout=2)


class CoordinatorDaemon:
    def __init__(self, cfg: CoordinatorConfig, insecure: bool = False) -> None:
        self.cfg, self.insecure = cfg, insecure
        self.stopping = threading.Event()
        # Credentials first: a missing or exposed key stops start-up before anything binds.
        self.credentials = None if insecure else server_credentials(cfg.tls.files())
        self.store = DiskStore(Path(cfg.coordinator.state_dir))
        self.metrics = CoordinatorMetrics()
        self.coordinator = Coordinator(cfg, self.store, self.metrics)
        self.audit = (
            AuditLog(Path(cfg.coordinator.audit_log)) if cfg.coordinator.audit_log else None
        )
        fed = cfg.federation
        interceptors: list[grpc.ServerInterceptor] = [LatencyInterceptor(self.metrics.rpc_duration)]
        if self.audit is not None:
            interceptors.append(AuditInterceptor(self.audit))
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.coordinator.max_workers),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", fed.max_piece_bytes + (64 << 10)),
                ("grpc.max_send_message_length", fed.max_piece_bytes + (64 << 10)),
            ],
        )
        pb_grpc.add_FederationServicer_to_server(
            FederationServicer(self.coordinator, insecure), self.server
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        host, port = split_listen(cfg.coordinator.listen)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self.credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, self.credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.coordinator.listen}")
        self.metrics_port = 0
        self._http: Any = None
        self.watch: HandshakeWatch | None = None

    def start(self) -> None:
        c = self.cfg.coordinator
        if c.count_tls_failures and not self.insecure:
            self.watch = HandshakeWatch(self.metrics.auth_rejections.labels("tls_handshake"))
        if c.metrics_listen:
            host, port = split_listen(c.metrics_listen)
            self._http, _ = start_http_server(port, host, registry=self.metrics.registry)
            self.metrics_port = int(self._http.server_port)
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.coordinator.export()  # the model of the last completed round (or the initial one)
        if self.insecure:
            log.warning(
                "INSECURE MODE: no TLS, node identity is whatever a client claims. "
                "For local experiments only; never expose this port."
            )
        log.info(
            "coordinator listening",
            extra=fields(
                grpc_port=self.port,
                metrics_port=self.metrics_port,
                federation=c.federation_id,
                round=self.coordinator.machine.round,
                state=self.coordinator.machine.state.value,
            ),
        )
        if c.ready_file:
            ready = Path(c.ready_file)
            tmp = ready.with_name(ready.name + ".tmp")
            tmp.write_text(
                json.dumps(
                    {"grpc_port": self.port, "metrics_port": self.metrics_port, "pid": os.getpid()}
                )
            )
            tmp.replace(ready)

    def serve_forever(self) -> None:
        while not self.stopping.wait(self.cfg.coordinator.tick_s):
            try:
                self.coordinator.tick()
            except Exception:  # a failing tick must not kill the service; it is logged
                log.exception("tick failed")

    def stop(self, grace_s: float = 5.0) -> None:
        self.stopping.set()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace_s).wait()
        if self._http is not None:
            self._http.shutdown()
        if self.audit is not None:
            self.audit.close()
        self.store.close()
        log.info("coordinator stopped", extra=fields(status=self.coordinator.status()))
        if self.watch is not None:
            self.watch.close()


def run(cfg: CoordinatorConfig, insecure: bool = False) -> int:
    daemon = CoordinatorDaemon(cfg, insecure)
    stop_on_signals(daemon.stopping, log)
    daemon.start()
    try:
        daemon.serve_forever()
    finally:
        daemon.stop()
    return 0
