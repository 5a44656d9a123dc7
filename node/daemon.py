"""`rosetta node --config FILE.toml`: one site's long-running daemon.

    join -> heartbeat until a round trains -> fetch the task -> train locally -> upload ->
    checkpoint -> ... -> the federation is done: fetch the final global state, save the site
    model, exit 0.

Transient trouble (UNAVAILABLE, deadlines: a coordinator restarting) is retried with
exponential backoff and jitter, and a restarted coordinator is re-joined by itself. Identity
trouble (a certificate the coordinator refuses, a name it does not admit) fails at once with
one line. SIGTERM stops it between steps; the last accepted round's checkpoint is kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import torch
from prometheus_client import start_http_server

from common.certs import check_own_certificate
from common.config import ModelConfig, from_mapping
from common.daemon import CLAIM_HEADER, REASON_TRAILER, VERSION, split_listen, stop_on_signals
from common.dataformat import read_anchor_set, read_data_folder
from common.inputs import to_model_inputs
from common.logs import fields
from common.modelio import save_model, save_site
from common.partition import load_shared_state, local_state, shared_state
from common.pretrained import WordPieceTokenizer, build_model
from common.tls import channel_credentials
from common.wire import UploadPayload, WireError, parse_task, upload_chunks
from node import checkpoint
from node.config import NodeConfig
from node.metrics import NodeMetrics
from node.training import LocalTrainer, RoundInterrupted
from proto.rosetta.v1 import federation_pb2 as pb
from proto.rosetta.v1 import federation_pb2_grpc as pb_grpc

log = logging.getLogger("rosetta.node")
T = TypeVar("T")

# Exit codes of `rosetta node` (and documented in README.md).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_SECURITY, EXIT_MISMATCH, EXIT_UNREACHABLE = 0, 1, 2, 3, 4, 5


class NodeExit(Exception):
    """Stop the daemon with this exit code and one line for the operator."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Refused(Exception):
    """The coordinator answered with a refusal that is not an identity problem."""

    def __init__(self, code: grpc.StatusCode, reason: str, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.reason, self.details = code, reason, details


class Stopped(Exception):
    """SIGTERM/SIGINT arrived while waiting."""


def sample_count_bucket(n: int) -> int:
    return int(math.log2(n)) if n > 0 else 0


class NodeDaemon:
    def __init__(self, cfg: NodeConfig, insecure: bool = False) -> None:
        self.cfg, self.insecure = cfg, insecure
        n = cfg.node
        self.stop = threading.Event()
        self.metrics = NodeMetrics()
        self.state_dir = Path(n.state_dir)
        self.samples = read_data_folder(Path(n.data))  # DataFormatError: one line, exit 2
        self.modality = self.samples.modality
        self.anchor_digest = read_anchor_set(Path(n.anchors), modalities=[self.modality]).digest
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", 8 << 20),
            ("grpc.max_send_message_length", 8 << 20),
        ]
        if insecure:
            self.channel = grpc.insecure_channel(n.coordinator, options=options)
        else:
            files = cfg.tls.files()
            check_own_certificate(files.cert, files.ca, files.key, n.name)
            if n.server_name:
                options.append(("grpc.ssl_target_name_override", n.server_name))
            self.channel = grpc.secure_channel(
                n.coordinator, channel_credentials(files), options=options
            )
        self.stub = pb_grpc.FederationStub(self.channel)
        self.md = ((CLAIM_HEADER, n.name),)
        self.trainer: LocalTrainer | None = None
        self.identity: checkpoint.Identity | None = None
        self.model_cfg: ModelConfig | None = None
        self.last_round = 0
        self._http: Any = None
        self._round_bytes = {True: 0, False: 0}  # bytes of the current round: sent?, count

    # RPCs ---------------------------------------------------------------------------------

    def _rpc(self, method: str, call: Callable[[float], T], transfer: bool = False) -> T:
        """Run `call(timeout)`; retry UNAVAILABLE/DEADLINE_EXCEEDED with backoff and jitter."""
        n = self.cfg.node
        backoff, down_since, attempts = n.retry_initial_s, 0.0, 0
        timeout = n.rpc_timeout_s * (10 if transfer else 1)
        while True:
            if self.stop.is_set():
                raise Stopped
            start = time.perf_counter()
            try:
                out = call(timeout)
            except grpc.RpcError as exc:
                code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
                details: str = exc.details() or ""  # type: ignore[attr-defined]
                self.metrics.rpc_duration.labels(method, code.name).observe(
                    time.perf_counter() - start
                )
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    if "handshake failed" in details.lower():
                        raise NodeExit(
                            EXIT_SECURITY, f"TLS handshake with {n.coordinator} failed: {details}"
                        ) from None
                    self.metrics.connected.set(0)
                    self.metrics.retries.labels(method).inc()
                    down_since = down_since or time.monotonic()
                    if n.give_up_s and time.monotonic() - down_since > n.give_up_s:
                        raise NodeExit(
                            EXIT_UNREACHABLE,
                            f"coordinator {n.coordinator} unreachable for {n.give_up_s:g}s: {details}",
                        ) from None
                    if attempts % 10 == 0:
                        log.warning(
                            "coordinator unavailable, retrying",
                            extra=fields(method=method, code=code.name, details=details[:200]),
                        )
                    attempts += 1
                    if self.stop.wait(backoff * random.uniform(0.5, 1.0)):
                        raise Stopped from None
                    backoff = min(2 * backoff, n.retry_max_s)
                    continue
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise NodeExit(
                        EXIT_SECURITY, f"coordinator refused this node: {details}"
                    ) from None
                trailers = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
                raise Refused(code, str(trailers.get(REASON_TRAILER, "")), details) from None
            self.metrics.rpc_duration.labels(method, "OK").observe(time.perf_counter() - start)
            if attempts:
                log.info("coordinator reachable again", extra=fields(method=method))
            self.metrics.connected.set(1)
            return out

    def _count(self, counter: Any, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            counter.inc(item.ByteSize())
            self._round_bytes[counter is self.metrics.sent_bytes] += item.ByteSize()
            yield item

    # lifecycle ----------------------------------------------------------------------------

    def _join(self) -> None:
        req = pb.JoinRequest(
            modality=self.modality,
            sample_count_bucket=sample_count_bucket(len(self.samples)),
            software_version=VERSION,
            anchor_digest=self.anchor_digest,
        )
        try:
            resp = self._rpc("Join", lambda t: self.stub.Join(req, timeout=t, metadata=self.md))
        except Refused as exc:
            code = EXIT_MISMATCH if exc.reason == "anchor_digest" else EXIT_FAILURE
            raise NodeExit(code, f"coordinator refused to admit this node: {exc.details}") from None
        if resp.anchor_digest != self.anchor_digest:
            raise NodeExit(EXIT_MISMATCH, "the coordinator announces another anchor set digest")
        identity = checkpoint.Identity(
            self.cfg.node.name, resp.federation_id, resp.model_config_json
        )
        if self.identity is not None and identity != self.identity:
            raise NodeExit(
                EXIT_MISMATCH,
                "the coordinator now serves another federation or model than this node trained",
            )
        if self.trainer is None:
            self._build(identity)
        log.info(
            "joined",
            extra=fields(
                node=resp.node_name,
                federation=resp.federation_id,
                round=resp.current_round,
                resumed_after=self.last_round,
            ),
        )

    def _build(self, identity: checkpoint.Identity) -> None:
        n = self.cfg.node
        cfg = from_mapping(ModelConfig, json.loads(identity.model_json), "model")
        cfg = dataclasses.replace(cfg.with_modalities(self.modality), device=n.device)
        anchors = read_anchor_set(
            Path(n.anchors), modalities=[self.modality], expected_digest=self.anchor_digest
        )
        tokenizer = (
            WordPieceTokenizer(cfg.tokenizers.text_max_tokens) if self.modality == "text" else None
        )
        inputs = to_model_inputs(self.samples, cfg, tokenizer)
        total = len(self.samples)
        if 0 < n.max_samples < total:
            gen = torch.Generator().manual_seed(self.cfg.train.seed)
            idx = torch.randperm(total, generator=gen)[: n.max_samples].sort().values
            inputs = {k: v[idx] for k, v in inputs.items()}
        anchor_inputs = to_model_inputs(anchors.modalities[self.modality], cfg, tokenizer)
        model = build_model(cfg)
        self.trainer = LocalTrainer(model, self.modality, inputs, anchor_inputs, self.cfg.train)
        self.model_cfg, self.identity = cfg, identity
        self.last_round = checkpoint.load(self.state_dir, self.trainer, identity)
        if self.last_round:
            log.info("resumed from checkpoint", extra=fields(round=self.last_round))
        self.metrics.last_round.set(self.last_round)

    def run(self) -> int:
        n = self.cfg.node
        if n.threads:
            torch.set_num_threads(n.threads)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        metrics_port = 0
        if n.metrics_listen:
            host, port = split_listen(n.metrics_listen)
            self._http, _ = start_http_server(port, host, registry=self.metrics.registry)
            metrics_port = int(self._http.server_port)
        if n.ready_file:
            Path(n.ready_file).write_text(
                json.dumps({"metrics_port": metrics_port, "pid": os.getpid()})
            )
        if self.insecure:
            log.warning("INSECURE MODE: no TLS. For local experiments only.")
        log.info(
            "node starting",
            extra=fields(
                node=n.name, modality=self.modality, samples=len(self.samples),
                coordinator=n.coordinator, metrics_port=metrics_port,
            ),
        )  # fmt: skip
        try:
            self._join()
            while not self.stop.is_set():
                try:
                    hb = self._rpc(
                        "Heartbeat",
                        lambda t: self.stub.Heartbeat(
                            pb.HeartbeatRequest(last_round_completed=self.last_round),
                            timeout=t,
                            metadata=self.md,
                        ),
                    )
                except Refused as exc:
                    if exc.reason != "not_joined":
                        raise NodeExit(EXIT_FAILURE, f"heartbeat refused: {exc}") from None
                    log.info("coordinator does not know this node (restarted?): joining again")
                    self._join()
                    continue
                if hb.state == pb.ROUND_STATE_DONE:
                    self._finish()
                    return EXIT_OK
                # A round this node has not uploaded for, or whose upload the coordinator no
                # longer holds (the round or the coordinator restarted): train it.
                wanted = hb.current_round > self.last_round or not hb.upload_received
                if hb.state == pb.ROUND_STATE_TRAINING and wanted:
                    self._round(int(hb.current_round))
                else:
                    self.stop.wait(n.poll_s)
        except Stopped:
            pass
        log.info("node stopped", extra=fields(last_round=self.last_round))
        return EXIT_OK

    def close(self) -> None:
        self.channel.close()
        if self._http is not None:
            self._http.shutdown()

    def _fetch(self, round_id: int) -> Any:
        req = pb.GetTaskRequest(round=round_id)
        return self._rpc(
            "GetTask",
            lambda t: parse_task(
                self._count(
                    self.metrics.received_bytes, self.stub.GetTask(req, timeout=t, metadata=self.md)
                )
            ),
            transfer=True,
        )

    def _round(self, rnd: int) -> None:
        assert self.trainer is not None
        self._round_bytes = {True: 0, False: 0}  # sent?, bytes
        try:
            task = self._fetch(rnd)
        except Refused as exc:  # the round moved on meanwhile, or the coordinator restarted
            log.info("no task", extra=fields(round=rnd, reason=exc.reason, details=exc.details))
            if exc.reason == "not_joined":
                self._join()
            return
        except WireError as exc:
            log.warning("task transfer broken, will retry", extra=fields(round=rnd, error=str(exc)))
            return
        h = task.header
        load_shared_state(self.trainer.model, task.global_state)
        self.trainer.cfg = dataclasses.replace(self.cfg.train, cka_weight=h.cka_weight)
        t0 = time.perf_counter()
        try:
            result = self.trainer.run_round(
                task.target, steps=int(h.local_steps), should_stop=self.stop.is_set
            )
        except RoundInterrupted:
            raise Stopped from None
        train_s = time.perf_counter() - t0
        payload = UploadPayload(
            header=pb.UploadHeader(
                round=rnd,
                sample_count=result.n_samples,
                loss=result.loss,
                local_cka=result.cka,
                node_precision=result.node_precision,
            ),
            delta=result.delta,
            precisions=result.precisions,
            gram=result.gram,
        )
        try:
            self._rpc(
                "UploadResult",
                lambda t: self.stub.UploadResult(
                    self._count(self.metrics.sent_bytes, upload_chunks(payload)),
                    timeout=t,
                    metadata=self.md,
                ),
                transfer=True,
            )
        except Refused as exc:
            if exc.code != grpc.StatusCode.ALREADY_EXISTS:  # else: an earlier try counted
                log.warning(
                    "upload refused",
                    extra=fields(
                        round=rnd, code=exc.code.name, reason=exc.reason, details=exc.details
                    ),
                )
                if exc.reason == "not_joined":
                    self._join()
                return
        self.last_round = rnd
        assert self.identity is not None
        checkpoint.save(self.state_dir, self.trainer, self.identity, rnd)
        steps = int(h.local_steps)
        rate = steps * self.cfg.train.batch_size / max(train_s, 1e-9)
        m = self.metrics
        m.rounds_completed.inc()
        m.last_round.set(rnd)
        m.training_seconds.observe(train_s)
        m.samples_per_second.set(rate)
        m.loss.set(result.loss)
        m.cka_to_target.set(result.cka)
        coverage = result.stats.get("coverage", 1.0)
        m.data_coverage.set(coverage)
        record = {
            "round": rnd,
            "loss": result.loss,
            "cka_to_target": result.cka,
            "node_precision": result.node_precision,
            "coverage": coverage,
            "train_s": train_s,
            "samples_per_s": rate,
            "bytes_up": self._round_bytes[True],
            "bytes_down": self._round_bytes[False],
        }
        with (self.state_dir / "rounds.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        log.info(
            "round done",
            extra=fields(
                round=rnd, loss=round(result.loss, 4), cka_to_target=round(result.cka, 4),
                coverage=round(coverage, 3),
                train_s=round(train_s, 2), bytes_up=record["bytes_up"],
            ),
        )  # fmt: skip

    def _finish(self) -> None:
        """Every round is done: the final global state into the site model, saved locally."""
        assert self.trainer is not None and self.model_cfg is not None
        self._round_bytes = {True: 0, False: 0}
        task = self._fetch(0)
        load_shared_state(self.trainer.model, task.global_state)
        folder = self.state_dir / "model"
        save_model(
            folder,
            self.model_cfg,
            shared_state(self.trainer.model),
            {
                "round": int(task.header.round),
                "sites": {
                    self.cfg.node.name: {"modality": self.modality, "samples": len(self.samples)}
                },
            },
        )
        save_site(folder, self.cfg.node.name, local_state(self.trainer.model))
        log.info(
            "federation done: site model saved",
            extra=fields(round=task.header.round, path=str(folder)),
        )


def run(cfg: NodeConfig, insecure: bool = False) -> int:
    daemon = NodeDaemon(cfg, insecure)
    stop_on_signals(daemon.stop, log)
    try:
        return daemon.run()
    finally:
        daemon.close()
