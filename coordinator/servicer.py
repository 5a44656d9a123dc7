"""The gRPC face of the coordinator: identity from the TLS peer, bytes in and out, status codes.

Thin by design: every decision is in coordinator.service.Coordinator. A ServiceError becomes
its status code with the message as details and its reason in the `rosetta-reason` trailing
metadata (nodes use it to tell "join first" from other refusals); a broken transfer becomes
INVALID_ARGUMENT, or RESOURCE_EXHAUSTED when it exceeds a size cap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

import grpc

from common.daemon import CLAIM_HEADER, REASON_TRAILER
from common.logs import fields
from common.wire import WireError, parse_upload, task_chunks
from coordinator.service import Coordinator, ServiceError
from proto.rosetta.v1 import federation_pb2 as pb
from proto.rosetta.v1 import federation_pb2_grpc as pb_grpc

log = logging.getLogger("rosetta.coordinator")
_now = time.perf_counter


def _abort(context: grpc.ServicerContext, exc: ServiceError) -> NoReturn:
    context.set_trailing_metadata(((REASON_TRAILER, exc.reason),))
    context.abort(grpc.StatusCode[exc.status], str(exc))
    raise AssertionError("unreachable")  # context.abort raises


class FederationServicer(pb_grpc.FederationServicer):
    def __init__(self, coordinator: Coordinator, insecure: bool = False) -> None:
        self.c, self.insecure = coordinator, insecure
        fed = coordinator.cfg.federation
        self.max_piece, self.max_upload = fed.max_piece_bytes, fed.max_upload_bytes

    def _identity(self, context: grpc.ServicerContext) -> str:
        """The caller's name: its certificate's common name (insecure mode: the claim header)."""
        claimed = dict(context.invocation_metadata()).get(CLAIM_HEADER)
        if self.insecure:
            if not claimed:
                _abort(context, ServiceError("UNAUTHENTICATED", "no_identity", "no node name sent"))
            name = str(claimed)
        else:
            names = context.auth_context().get("x509_common_name")
            if not names:
                self.c.metrics.auth_rejections.labels("no_certificate").inc()
                _abort(
                    context,
                    ServiceError("UNAUTHENTICATED", "no_certificate", "no client certificate"),
                )
            name = names[0].decode()
        try:
            self.c.admit(name, str(claimed) if claimed is not None else None)
        except ServiceError as exc:
            _abort(context, exc)
        return name

    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinResponse:
        node = self._identity(context)
        self.c.metrics.received_bytes.inc(request.ByteSize())
        try:
            response = self.c.join(node, request)
        except ServiceError as exc:
            _abort(context, exc)
        self.c.metrics.sent_bytes.inc(response.ByteSize())
        return response

    def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.HeartbeatResponse:
        node = self._identity(context)
        try:
            response = self.c.heartbeat(node, request)
        except ServiceError as exc:
            _abort(context, exc)
        self.c.metrics.received_bytes.inc(request.ByteSize())
        self.c.metrics.sent_bytes.inc(response.ByteSize())
        return response

    def GetTask(
        self, request: pb.GetTaskRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TaskChunk]:
        node = self._identity(context)
        try:
            payload = self.c.task(node, int(request.round))
        except ServiceError as exc:
            _abort(context, exc)
        self.c.metrics.received_bytes.inc(request.ByteSize())
        for chunk in task_chunks(payload, self.max_piece):
            self.c.metrics.sent_bytes.inc(chunk.ByteSize())
            yield chunk

    def UploadResult(
        self, request_iterator: Iterable[pb.UploadChunk], context: grpc.ServicerContext
    ) -> pb.UploadResponse:
        node = self._identity(context)

        def counted() -> Iterator[pb.UploadChunk]:
            for chunk in request_iterator:
                self.c.metrics.received_bytes.inc(chunk.ByteSize())
                yield chunk

        try:
            payload = parse_upload(counted(), self.max_upload, self.max_piece)
        except WireError as exc:
            self.c.reject_transfer(node, exc.reason)
            log.warning(
                "upload refused", extra=fields(node=node, reason=exc.reason, error=str(exc))
            )
            status = "RESOURCE_EXHAUSTED" if exc.reason == "too_large" else "INVALID_ARGUMENT"
            _abort(context, ServiceError(status, exc.reason, str(exc)))
        try:
            response = self.c.upload(node, payload)
        except ServiceError as exc:
            _abort(context, exc)
        self.c.metrics.sent_bytes.inc(response.ByteSize())
        return response


def _method(details: Any) -> str:
    return str(details.method).rsplit("/", 1)[-1]


class _BehaviorInterceptor(grpc.ServerInterceptor):
    """Wraps each RPC's behaviour: `unary(method, behavior, streaming_request)` for RPCs with one
    response, `stream(method, behavior)` for server-streaming ones (the kinds Federation uses)."""

    def unary(self, method: str, behavior: Any, streaming_request: bool) -> Any:
        raise NotImplementedError

    def stream(self, method: str, behavior: Any) -> Any:
        raise NotImplementedError

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = _method(handler_call_details)
        if handler.unary_unary:
            return handler._replace(unary_unary=self.unary(method, handler.unary_unary, False))
        if handler.stream_unary:
            return handler._replace(stream_unary=self.unary(method, handler.stream_unary, True))
        if handler.unary_stream:
            return handler._replace(unary_stream=self.stream(method, handler.unary_stream))
        return handler


def _code(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()  # type: ignore[attr-defined]
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return str(getattr(code, "name", code))


class LatencyInterceptor(_BehaviorInterceptor):
    """rosetta_coordinator_rpc_duration_seconds{method, code} for every RPC, streams included."""

    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram

    def unary(self, method: str, behavior: Any, streaming_request: bool) -> Any:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            start, failed = _now(), True
            try:
                out = behavior(request, context)
                failed = False
                return out
            finally:
                self.histogram.labels(method, _code(context, failed)).observe(_now() - start)

        return run

    def stream(self, method: str, behavior: Any) -> Any:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            start, failed = _now(), True
            try:
                yield from behavior(request, context)
                failed = False
            finally:
                self.histogram.labels(method, _code(context, failed)).observe(_now() - start)

        return run


class AuditInterceptor(_BehaviorInterceptor):
    """Writes every protocol message received and sent as a JSON line (type, method, bytes).

    For compliance reviews and the wire-audit test: what crossed the wire, exactly."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink  # callable(direction, method, message)

    def _incoming(self, method: str, items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            self.sink("in", method, item)
            yield item

    def unary(self, method: str, behavior: Any, streaming_request: bool) -> Any:
        def run(request: Any, context: Any) -> Any:
            if streaming_request:
                request = self._incoming(method, request)
            else:
                self.sink("in", method, request)
            out = behavior(request, context)
            self.sink("out", method, out)
            return out

        return run

    def stream(self, method: str, behavior: Any) -> Any:
        def run(request: Any, context: Any) -> Any:
            self.sink("in", method, request)
            for item in behavior(request, context):
                self.sink("out", method, item)
                yield item

        return run
