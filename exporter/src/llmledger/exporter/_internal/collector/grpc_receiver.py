"""OTLP/gRPC: the ``Export`` methods of the trace, metrics and logs services.

The method is registered with no request deserializer, so the handler receives the raw
protobuf bytes, decodes them once to validate and spools those same bytes. Status codes
follow the OTLP specification: ``INVALID_ARGUMENT`` for malformed requests,
``UNAUTHENTICATED`` without the bearer token, and the retryable ``RESOURCE_EXHAUSTED``
(spool full) and ``UNAVAILABLE`` (disk error, shutting down) carrying a
``google.rpc.RetryInfo`` (in both trailers exporters read) so they know how long to wait.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status

from .ingest import RETRY_AFTER_SECONDS, Ingest, Outcome, RefusedError
from .otlp import InvalidRequestError, TooLargeError, decode_protobuf, encode_response
from .otlp_signals import Signal, decode_signal_protobuf, encode_signal_response

__all__ = ["start_grpc_server"]

_logger = logging.getLogger("llmledger.collector.grpc")

_OUTCOME_CODE: Final = {
    Outcome.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Outcome.TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    Outcome.UNSUPPORTED_MEDIA: grpc.StatusCode.INVALID_ARGUMENT,
    Outcome.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Outcome.SPOOL_FULL: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Outcome.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


def _retry_trailers(code: grpc.StatusCode, message: str) -> tuple[tuple[str, bytes], ...]:
    """The retry advice, both ways exporters read it.

    ``grpc-status-details-bin`` (a ``google.rpc.Status`` carrying ``RetryInfo``) is the gRPC
    convention the OpenTelemetry Collector and Go/Java exporters read; the Python SDK's
    exporter reads a bare ``RetryInfo`` from ``google.rpc.retryinfo-bin`` instead
    (``opentelemetry.exporter.otlp.proto.grpc.exporter``), and backs off 1, 2, 4 … s without it.
    """
    retry = RetryInfo(retry_delay=Duration(seconds=RETRY_AFTER_SECONDS))
    status = Status(code=code.value[0], message=message)
    status.details.add().Pack(retry)
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", retry.SerializeToString()),
    )


def _export_handler(ingest: Ingest, signal: Signal) -> grpc.RpcMethodHandler[bytes, bytes]:
    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            metadata = dict(context.invocation_metadata())
            if not ingest.authorized(str(metadata.get("authorization", "")) or None):
                raise RefusedError(Outcome.UNAUTHENTICATED, "missing or wrong bearer token")
            with ingest.admit(timeout=5.0):
                try:
                    if signal is Signal.TRACES:
                        decoded = decode_protobuf(request)
                    else:
                        decoded = decode_signal_protobuf(signal, request)
                except TooLargeError as exc:
                    raise RefusedError(Outcome.TOO_LARGE, str(exc)) from exc
                except InvalidRequestError as exc:
                    raise RefusedError(Outcome.INVALID, str(exc)) from exc
                ingest.store(decoded, signal)
        except RefusedError as error:
            ingest.refuse(error)
            code = _OUTCOME_CODE[error.outcome]
            if error.retryable:
                context.set_trailing_metadata(_retry_trailers(code, error.message))
            else:
                _logger.info("refused a gRPC request from %s: %s", context.peer(), error.message)
            context.abort(code, error.message)
        if signal is not Signal.TRACES:
            return encode_signal_response(signal, False)
        return encode_response(False, decoded.rejected_spans, decoded.rejection_message)

    return grpc.unary_unary_rpc_method_handler(export)  # pyright: ignore[reportUnknownVariableType]


def start_grpc_server(
    address: tuple[str, int],
    ingest: Ingest,
    *,
    max_workers: int,
    tls: tuple[bytes, bytes] | None = None,
) -> tuple[grpc.Server, int]:
    """Start the OTLP/gRPC receiver; return the server and the port it listens on.

    ``tls`` is (PEM private key, PEM certificate chain).
    """
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="llmledger-grpc"),
        # A service this collector does not spool is not registered: gRPC answers UNIMPLEMENTED.
        handlers=[
            grpc.method_handlers_generic_handler(
                signal.grpc_service, {"Export": _export_handler(ingest, signal)}
            )
            for signal in Signal
            if ingest.accepts(signal)
        ],
        options=[
            ("grpc.max_receive_message_length", ingest.max_request_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_workers * 4,
    )
    host, port = address
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is not None:
        bound = server.add_secure_port(target, grpc.ssl_server_credentials([tls]))
    else:
        bound = server.add_insecure_port(target)
    if not bound:
        raise OSError(f"cannot listen for OTLP/gRPC on {target}")
    server.start()
    return server, bound
