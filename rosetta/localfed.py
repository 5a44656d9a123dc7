"""A real federation on this machine: a throwaway CA, certificates, config files, and one
coordinator and one node process per site over mutual TLS on loopback (ports chosen by the
OS). Used by `make demo` and by the end-to-end tests; nothing here is a mock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import certs


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(doc: Mapping[str, Mapping[str, Any]]) -> str:
    """Tables of scalars, arrays and sub-tables (enough for Rosetta's configs)."""
    lines: list[str] = []

    def table(name: str, body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        lines.append(f"[{name}]")
        lines.extend(
            f"{json.dumps(k) if not k.isidentifier() else k} = {toml_value(v)}"
            for k, v in scalars.items()
        )
        lines.append("")
        for k, v in body.items():
            if isinstance(v, Mapping):
                table(f"{name}.{k}", v)

    for name, body in doc.items():
        table(name, body)
    return "\n".join(lines)


def scrape(port: int, timeout: float = 5.0) -> dict[str, float]:
    """One Prometheus scrape: {"name{label=...}": value} of every sample."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return out


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class LocalFederation:
    """root/ holds pki/, config/, state/, logs/. `sites` maps node name -> data folder."""

    root: Path
    anchors: Path
    sites: Mapping[str, Path]
    modalities: Mapping[str, str]  # node name -> modality
    model: Mapping[str, Any] = field(default_factory=dict)
    federation: Mapping[str, Any] = field(default_factory=dict)
    strategy: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    node_extra: Mapping[str, Any] = field(default_factory=dict)  # extra [node] keys for every node
    audit: bool = False
    python: str = sys.executable
    procs: dict[str, Proc] = field(default_factory=dict)
    grpc_port: int = 0
    metrics_port: int = 0

    def __post_init__(self) -> None:  # config files hold absolute paths
        self.root, self.anchors = self.root.resolve(), self.anchors.resolve()
        self.sites = {k: v.resolve() for k, v in self.sites.items()}

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    def prepare(self) -> None:
        """A throwaway CA; a server certificate for localhost; one client certificate per site."""
        for sub in ("pki", "config", "state", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        certs.create_ca(self.pki / "ca", name="Rosetta demo CA", days=2)
        _, csr = certs.create_request(
            self.pki / "coordinator", "coordinator", ["localhost", "127.0.0.1"]
        )
        certs.sign_request(
            self.pki / "ca", csr, self.pki / "coordinator" / "coordinator.crt", days=2, server=True
        )
        for name in self.sites:
            self.issue(name)
        self.write_coordinator_config()

    def issue(self, name: str, ca: Path | None = None) -> Path:
        """A key + CSR made in the site's own folder, signed by the CA (default: the federation's)."""
        _, csr = certs.create_request(self.pki / name, name)
        return certs.sign_request(
            ca or self.pki / "ca", csr, self.pki / name / f"{name}.crt", days=2
        )

    def write_coordinator_config(self) -> Path:
        doc = {
            "coordinator": {
                "listen": "127.0.0.1:0",
                "metrics_listen": "127.0.0.1:0",
                "state_dir": str(self.root / "state" / "coordinator"),
                "anchors": str(self.anchors),
                "federation_id": "rosetta-local",
                "ready_file": str(self.root / "state" / "coordinator.ready"),
                "tick_s": 0.2,
                **({"audit_log": str(self.root / "state" / "audit.jsonl")} if self.audit else {}),
            },
            "tls": {
                "ca": str(self.pki / "ca" / "ca.crt"),
                "cert": str(self.pki / "coordinator" / "coordinator.crt"),
                "key": str(self.pki / "coordinator" / "coordinator.key"),
            },
            "federation": dict(self.federation),
            "nodes": dict(self.modalities),
            "strategy": dict(self.strategy),
            "model": dict(self.model),
        }
        path = self.root / "config" / "coordinator.toml"
        path.write_text(dump_toml(doc))
        return path

    def write_node_config(self, name: str, **extra: Any) -> Path:
        doc = {
            "node": {
                "name": name,
                "coordinator": f"127.0.0.1:{self.grpc_port}",
                "server_name": "localhost",
                "data": str(self.sites[name]),
                "anchors": str(self.anchors),
                "state_dir": str(self.root / "state" / name),
                "metrics_listen": "127.0.0.1:0",
                "ready_file": str(self.root / "state" / f"{name}.ready"),
                "threads": 1,
                "poll_s": 0.3,
                "retry_initial_s": 0.2,
                "retry_max_s": 2.0,
                **dict(self.node_extra),
                **extra,
            },
            "tls": {
                "ca": str(self.pki / "ca" / "ca.crt"),
                "cert": str(self.pki / name / f"{name}.crt"),
                "key": str(self.pki / name / f"{name}.key"),
            },
            "train": dict(self.train),
        }
        path = self.root / "config" / f"{name}.toml"
        path.write_text(dump_toml(doc))
        return path

    def _spawn(self, name: str, args: list[str]) -> Proc:
        log = self.root / "logs" / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        with log.open("ab") as f:
            popen = subprocess.Popen(
                [self.python, "-m", "rosetta.cli", *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
            )
        proc = self.procs[name] = Proc(name, popen, log)
        return proc

    def start_coordinator(self, timeout: float = 120.0) -> Proc:
        ready = self.root / "state" / "coordinator.ready"
        ready.unlink(missing_ok=True)
        proc = self._spawn(
            "coordinator",
            ["coordinator", "--config", str(self.root / "config" / "coordinator.toml")],
        )

        def is_ready() -> bool:
            if proc.popen.poll() is not None:
                raise RuntimeError(
                    f"coordinator exited with {proc.popen.returncode}:\n{proc.tail()}"
                )
            return ready.is_file()

        wait_for(is_ready, timeout, "the coordinator to listen")
        info = json.loads(ready.read_text())
        self.grpc_port, self.metrics_port = int(info["grpc_port"]), int(info["metrics_port"])
        return proc

    def restart_coordinator(self, timeout: float = 120.0) -> Proc:
        """Start the coordinator again on the ports it had (nodes keep their address)."""
        path = self.root / "config" / "coordinator.toml"
        text = path.read_text()
        text = text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{self.grpc_port}"', 1)
        text = text.replace(
            'metrics_listen = "127.0.0.1:0"', f'metrics_listen = "127.0.0.1:{self.metrics_port}"'
        )
        path.write_text(text)
        return self.start_coordinator(timeout)

    def start_node(self, name: str, **extra: Any) -> Proc:
        (self.root / "state" / f"{name}.ready").unlink(missing_ok=True)
        config = self.write_node_config(name, **extra)
        return self._spawn(name, ["node", "--config", str(config)])

    def node_metrics_port(self, name: str, timeout: float = 120.0) -> int:
        ready = self.root / "state" / f"{name}.ready"
        wait_for(ready.is_file, timeout, f"node {name} to start")
        return int(json.loads(ready.read_text())["metrics_port"])

    def coordinator_metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs[name].popen
        proc.send_signal(sig)
        return proc.wait(timeout=60)

    def stop_all(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every process still running, SIGKILL after `timeout`; their exit codes."""
        for p in self.procs.values():
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, p in self.procs.items():
            try:
                codes[name] = p.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                codes[name] = p.popen.wait()
        return codes
