"""What the two daemons share beyond the library: config-file reading, listen addresses, the
protocol's metadata keys and the software version. (node/ and coordinator/ never import each
other: they are programs run by different organisations.)"""

from __future__ import annotations

import logging
import signal
import threading
import tomllib
from pathlib import Path
from typing import Any

VERSION = "0.1.0"
# Request metadata: the name a node believes it has; the coordinator refuses it unless it
# equals the certificate's common name (insecure mode: the only identity there is).
CLAIM_HEADER = "rosetta-node"
# Trailing metadata of a refusal: a short reason label ("not_joined", "duplicate", ...).
REASON_TRAILER = "rosetta-reason"


class ConfigError(ValueError):
    """A bad config file: one line naming the file and the problem (exit code 2)."""


def read_toml_tables(path: Path, tables: tuple[str, ...]) -> dict[str, Any]:
    """A TOML file whose top-level keys are all tables named in `tables`; ConfigError otherwise."""
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: unreadable ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(doc) - set(tables))
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {unknown} (expected {', '.join(f'[{t}]' for t in tables)})"
        )
    return doc


def resolve(base: Path, value: str) -> str:
    """A path from a config file: relative ones are relative to the file's folder."""
    return str(base / value) if value and not Path(value).is_absolute() else value


def split_listen(listen: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"; ValueError otherwise."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"listen address must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def stop_on_signals(stop: threading.Event, log: logging.Logger) -> None:
    """SIGTERM and SIGINT set `stop` (logged); the daemon finishes what it must and exits 0."""

    def on_signal(signum: int, _frame: Any) -> None:
        log.info(
            "signal received, stopping", extra={"fields": {"signal": signal.Signals(signum).name}}
        )
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
