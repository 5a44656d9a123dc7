"""The coordinator's request handlers: plain Python over the round machine, the aggregate and
the durable store. The gRPC servicer (coordinator/servicer.py) only translates.

Every handler takes the caller's identity (the common name of its client certificate) first.
Failures raise ServiceError with a gRPC status name, a short reason label for metrics and logs,
and a one-line message for the caller. One lock serialises state changes; uploads are parsed
outside it and folded into running sums inside it, so memory does not grow with the nodes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from common.alignment import cka
from common.dataformat import read_anchor_set
from common.logs import fields
from common.modelio import save_model
from common.partition import modality_view, shared_state
from common.pretrained import build_model
from common.wire import TaskPayload, UploadPayload
from coordinator.config import CoordinatorConfig
from coordinator.metrics import CoordinatorMetrics
from coordinator.rounds import RoundError, RoundMachine, RoundState
from coordinator.state import CompletedRound, StateStore
from coordinator.strategy import RoundAggregate, Upload
from coordinator.validation import UploadRejectedError, validate_upload
from proto.rosetta.v1 import federation_pb2 as pb

log = logging.getLogger("rosetta.coordinator")

PB_STATE = {
    RoundState.WAITING_FOR_NODES: pb.ROUND_STATE_WAITING_FOR_NODES,
    RoundState.TRAINING: pb.ROUND_STATE_TRAINING,
    RoundState.AGGREGATING: pb.ROUND_STATE_AGGREGATING,
    RoundState.DONE: pb.ROUND_STATE_DONE,
}


class ServiceError(Exception):
    """A refused request: `status` is a grpc.StatusCode name, `reason` a metrics label."""

    def __init__(self, status: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


class StateMismatchError(ValueError):
    """The durable state belongs to another model layout or anchor set (exit code 4)."""


def check_resumable(
    initial: dict[str, Tensor], state: dict[str, Tensor], target: Tensor | None, n_anchors: int
) -> None:
    """Refuse to resume from a state the configured model or anchor set cannot continue."""
    shapes = {k: tuple(v.shape) for k, v in initial.items()}
    stored = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != stored:
        differ = sorted(set(shapes) ^ set(stored)) or sorted(
            k for k in shapes if shapes[k] != stored[k]
        )
        raise StateMismatchError(
            f"the state directory holds another model's state (differs at {differ[:2]}); "
            "use a new state_dir for a new model"
        )
    if target is not None and tuple(target.shape) != (n_anchors, n_anchors):
        raise StateMismatchError(
            f"the state directory's target is {int(target.shape[0])} anchors, the anchor set "
            f"has {n_anchors}; use a new state_dir for a new anchor set"
        )


def model_json(cfg: Any) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


class Coordinator:
    def __init__(
        self,
        cfg: CoordinatorConfig,
        store: StateStore,
        metrics: CoordinatorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg, self.store, self.clock = cfg, store, clock
        self.metrics = metrics or CoordinatorMetrics()
        self.lock = threading.RLock()
        anchors = read_anchor_set(Path(cfg.coordinator.anchors), modalities=[])
        self.anchor_digest, self.n_anchors = anchors.digest, len(anchors)
        self.model_cfg = dataclasses.replace(cfg.model, device="cpu")
        self.model_json = model_json(self.model_cfg)
        initial = shared_state(build_model(self.model_cfg))
        latest = store.latest()
        if latest is None:
            self.global_state = initial
            self.target: Tensor | None = None
            completed = 0
        else:
            self.global_state, self.target, completed = (
                latest.global_state,
                latest.target,
                latest.round,
            )
            check_resumable(initial, latest.global_state, latest.target, self.n_anchors)
            log.info("resumed from the last completed round", extra=fields(round=completed))
        self.layout = {k: tuple(v.shape) for k, v in self.global_state.items()}
        self.machine = RoundMachine(
            cfg.federation.policy(), completed_rounds=completed, clock=clock
        )
        self.last_seen: dict[str, float] = {}
        self.aggregate = RoundAggregate(cfg.strategy, reference=self.target)
        self._aggregate_for = 0  # machine.starts the aggregate belongs to
        self._round_started = time.time()
        self._seen_transitions = 0
        self.metrics.last_completed_round.set(completed)
        self._sync_metrics()

    # identity ------------------------------------------------------------------------------

    def admit(self, node: str, claimed: str | None = None) -> str:
        """The caller's modality; PERMISSION_DENIED unless admitted and not claiming another name."""
        if claimed is not None and claimed != node:
            self.metrics.auth_rejections.labels("claimed_other_name").inc()
            log.warning("refused: claims another name", extra=fields(node=node, claimed=claimed))
            raise ServiceError(
                "PERMISSION_DENIED",
                "claimed_other_name",
                f"certificate is for {node!r}, the request claims {claimed!r}",
            )
        modality = self.cfg.nodes.get(node)
        if modality is None:
            self.metrics.auth_rejections.labels("unknown_node").inc()
            log.warning("refused: not an admitted node", extra=fields(node=node))
            raise ServiceError(
                "PERMISSION_DENIED", "unknown_node", f"{node!r} is not an admitted node"
            )
        return modality

    def _joined(self, node: str) -> str:
        modality = self.admit(node)
        if node not in self.machine.nodes:
            raise ServiceError(
                "FAILED_PRECONDITION", "not_joined", f"{node!r} has not joined (call Join first)"
            )
        return modality

    # handlers ------------------------------------------------------------------------------

    def join(self, node: str, req: pb.JoinRequest) -> pb.JoinResponse:
        modality = self.admit(node)
        if req.modality != modality:
            self.metrics.auth_rejections.labels("wrong_modality").inc()
            raise ServiceError(
                "PERMISSION_DENIED",
                "wrong_modality",
                f"{node!r} is admitted for {modality!r}, not {req.modality!r}",
            )
        if req.anchor_digest and req.anchor_digest != self.anchor_digest:
            raise ServiceError(
                "FAILED_PRECONDITION",
                "anchor_digest",
                "the node's anchor set differs from the federation's (digest mismatch)",
            )
        with self.lock:
            fresh = node not in self.machine.nodes
            self.last_seen[node] = self.clock()
            self.machine.join(node)
            self._after_change()
        if fresh:
            log.info(
                "node joined",
                extra=fields(node=node, modality=modality, version=req.software_version),
            )
        return pb.JoinResponse(
            node_name=node,
            federation_id=self.cfg.coordinator.federation_id,
            anchor_digest=self.anchor_digest,
            model_config_json=self.model_json,
            current_round=self.machine.round,
        )

    def heartbeat(self, node: str, req: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        with self.lock:
            self._joined(node)
            self.last_seen[node] = self.clock()
            m = self.machine
            left = max(0.0, m.deadline - self.clock()) if m.state is RoundState.TRAINING else 0.0
            return pb.HeartbeatResponse(
                current_round=m.round if m.state is not RoundState.DONE else m.completed_rounds,
                state=PB_STATE[m.state],
                seconds_to_deadline=left,
                upload_received=node in m.uploaded,
            )

    def task(self, node: str, round_id: int) -> TaskPayload:
        """The current round's task, or (when every round is done) the final global state."""
        with self.lock:
            modality = self._joined(node)
            m = self.machine
            if m.state is RoundState.DONE:
                header = pb.TaskHeader(round=m.completed_rounds, local_steps=0)
                return TaskPayload(header, modality_view(self.global_state, modality), None)
            if m.state is not RoundState.TRAINING:
                raise ServiceError(
                    "FAILED_PRECONDITION",
                    "no_round",
                    f"no round is training (state {m.state.value})",
                )
            if round_id and round_id != m.round:
                raise ServiceError(
                    "FAILED_PRECONDITION",
                    "wrong_round",
                    f"task requested for round {round_id}, the current round is {m.round}",
                )
            fed = self.cfg.federation
            header = pb.TaskHeader(
                round=m.round,
                local_steps=fed.local_steps,
                cka_weight=fed.cka_weight,
                anchors=self.n_anchors,
                has_target=self.target is not None,
                deadline_unix_seconds=time.time() + (m.deadline - self.clock()),
            )
            return TaskPayload(header, modality_view(self.global_state, modality), self.target)

    def upload(self, node: str, payload: UploadPayload) -> pb.UploadResponse:
        """Validate, count once, fold into the round's sums; the last expected upload aggregates."""
        h = payload.header
        with self.lock:
            modality = self._joined(node)
            m = self.machine
            try:
                if m.state is RoundState.TRAINING and h.round == m.round and node in m.uploaded:
                    raise ServiceError(
                        "ALREADY_EXISTS", "duplicate", f"{node!r} already uploaded round {h.round}"
                    )
                if m.state is not RoundState.TRAINING:
                    raise ServiceError(
                        "FAILED_PRECONDITION",
                        "no_round",
                        f"no round accepts uploads ({m.state.value})",
                    )
                if node not in m.participants:
                    raise ServiceError(
                        "FAILED_PRECONDITION",
                        "not_participant",
                        f"{node!r} is not in round {m.round}",
                    )
                try:
                    validate_upload(
                        node=node,
                        modality=modality,
                        round_id=int(h.round),
                        current_round=m.round,
                        delta=payload.delta,
                        precisions=payload.precisions,
                        gram=payload.gram,
                        node_precision=float(h.node_precision),
                        sample_count=int(h.sample_count),
                        layout=self.layout,
                        n_anchors=self.n_anchors,
                        limits=self.cfg.federation.limits(),
                    )
                except UploadRejectedError as exc:
                    status = (
                        "FAILED_PRECONDITION" if exc.reason == "wrong_round" else "INVALID_ARGUMENT"
                    )
                    raise ServiceError(status, exc.reason, str(exc)) from None
                self._fresh_aggregate()
                staged = Upload(
                    node,
                    modality,
                    payload.delta,
                    payload.precisions,
                    float(h.node_precision),
                    payload.gram,
                    int(h.sample_count),
                )
                try:
                    self.aggregate.add(staged)  # validates before it mutates
                except ValueError as exc:
                    raise ServiceError("INVALID_ARGUMENT", "inconsistent", str(exc)) from None
                m.accept_upload(node, int(h.round))
            except ServiceError as exc:
                self.metrics.uploads_rejected.labels(exc.reason).inc()
                log.warning(
                    "upload rejected",
                    extra=fields(node=node, round=h.round, reason=exc.reason, error=str(exc)),
                )
                raise
            except RoundError as exc:
                self.metrics.uploads_rejected.labels("wrong_round").inc()
                raise ServiceError("FAILED_PRECONDITION", "wrong_round", str(exc)) from None
            self.metrics.uploads_accepted.inc()
            log.info(
                "upload accepted",
                extra=fields(
                    node=node, round=h.round, loss=round(h.loss, 4), local_cka=round(h.local_cka, 4)
                ),
            )
            self._after_change()
            return pb.UploadResponse(accepted=True, round=h.round)

    def reject_transfer(self, node: str, reason: str) -> None:
        """A transfer that failed before validation (bad pieces, checksum, caps): counted."""
        self.metrics.uploads_rejected.labels(reason).inc()

    # time and rounds -----------------------------------------------------------------------

    def tick(self) -> None:
        """Deadlines and liveness; called periodically by the daemon."""
        with self.lock:
            now = self.clock()
            for node, seen in list(self.last_seen.items()):
                if node in self.machine.nodes and now - seen > self.cfg.federation.node_timeout_s:
                    self.machine.leave(node)
                    log.warning("node timed out (no heartbeat)", extra=fields(node=node))
            self.machine.tick()
            self._after_change()

    def _fresh_aggregate(self) -> None:
        if self._aggregate_for != self.machine.starts:
            self.aggregate = RoundAggregate(self.cfg.strategy, reference=self.target)
            self._aggregate_for = self.machine.starts
            self._round_started = time.time()

    def _after_change(self) -> None:
        if self.machine.state is RoundState.AGGREGATING:
            try:
                self._complete_round()
            except Exception:  # e.g. a full disk: the round stays AGGREGATING, the tick retries
                log.exception("committing the round failed; retrying at the next tick")
        self._fresh_aggregate()
        self._sync_metrics()

    def _complete_round(self) -> None:
        rnd = self.machine.round
        agg = self.aggregate
        new_state, target, omega = agg.finish(self.global_state, self.target)
        per_modality = agg.modality_grams()
        agreement = {m: float(cka(g, target.double())) for m, g in per_modality.items()}
        summary = {
            "nodes": list(agg.nodes),
            "modality_weights": omega,
            "consensus_cka": agreement,
            "duration_s": time.time() - self._round_started,
        }
        self.store.commit_round(CompletedRound(rnd, new_state, target, summary, time.time()))
        self.global_state, self.target = new_state, target
        self.export()
        self.machine.round_committed()
        self.metrics.rounds_completed.inc()
        self.metrics.last_completed_round.set(rnd)
        self.metrics.round_duration.observe(summary["duration_s"])
        for m, v in agreement.items():
            self.metrics.consensus_cka.labels(m).set(v)
        for m, v in omega.items():
            self.metrics.modality_weight.labels(m).set(v)
        log.info(
            "round committed",
            extra=fields(
                round=rnd,
                nodes=len(agg.nodes),
                consensus_cka={m: round(v, 4) for m, v in agreement.items()},
                duration_s=round(summary["duration_s"], 2),
            ),
        )

    def export(self) -> None:
        """The global model for `rosetta evaluate` (atomic files under export_dir)."""
        save_model(
            self.cfg.export_dir,
            self.model_cfg,
            self.global_state,
            {
                "round": self.machine.completed_rounds,
                "federation_id": self.cfg.coordinator.federation_id,
                "anchor_digest": self.anchor_digest,
                "nodes": dict(self.cfg.nodes),
            },
        )

    def _sync_metrics(self) -> None:
        m = self.machine
        for rnd, src, dst, why in m.transitions[self._seen_transitions :]:
            self.metrics.transitions.labels(src, dst).inc()
            log.info("round state", extra=fields(round=rnd, src=src, dst=dst, why=why))
        self._seen_transitions = len(m.transitions)
        self.metrics.round_state.state(m.state.value)
        self.metrics.round.set(m.round if m.state is not RoundState.DONE else m.completed_rounds)
        self.metrics.nodes_connected.set(len(m.nodes))

    def status(self) -> dict[str, Any]:
        with self.lock:
            m = self.machine
            return {
                "state": m.state.value,
                "round": m.round,
                "completed_rounds": m.completed_rounds,
                "nodes": sorted(m.nodes),
                "uploaded": sorted(m.uploaded),
            }
