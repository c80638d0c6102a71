"""Sending one serialized OTLP trace request, over HTTP or gRPC, as the standard exporters do.

The buffered exporter stores the request bytes and sends those same bytes later, so the
transport takes bytes, not spans: HTTP through the standard library's ``http.client`` (one
keep-alive connection), gRPC through ``grpcio`` with an identity serializer. Settings come
from the standard ``OTEL_EXPORTER_OTLP_*`` variables, the traces-specific one first, read
the way opentelemetry-python reads them (the timeout in seconds).

Every attempt is one request with one timeout; retrying is the caller's business, so an
outcome says whether trying again can help (:class:`Delivery`), following the OTLP
specification: HTTP 429, 502, 503, 504 and gRPC ``UNAVAILABLE`` and friends are
retryable, a malformed or oversized request (400, 413, 415, ``INVALID_ARGUMENT``) is not.
Authentication and endpoint errors (401, 403, 404, ``UNAUTHENTICATED``) count as retryable
here: they are configuration mistakes, and the buffer keeps the spans until they are fixed.
"""

from __future__ import annotations

import enum
import gzip
import http.client
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast
from urllib.parse import urlsplit

from opentelemetry.util.re import parse_env_headers

from llmledger.instrumentation.version import __version__

__all__ = ["Delivery", "OtlpSettings", "SendResult", "Sender", "open_sender"]

_PROTOCOLS: Final = ("http/protobuf", "grpc")
_DEFAULT_TIMEOUT: Final = 10.0
_TRACES_PATH: Final = "/v1/traces"
_GRPC_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# HTTP statuses that say this request will never be accepted as it is.
_HTTP_RETRYABLE_4XX: Final = frozenset({401, 403, 404, 408, 429})


class Delivery(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    """Not taken now; the same bytes may be taken later."""
    REJECTED = "rejected"
    """Never taken as they are (malformed, too large)."""


@dataclass(frozen=True, slots=True)
class SendResult:
    delivery: Delivery
    detail: str = ""
    retry_after: float | None = None


_DELIVERED: Final = SendResult(Delivery.DELIVERED)


def _setting(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}")
    return value.strip() if value and value.strip() else None


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    """Where and how to send, from the standard OTLP exporter variables."""

    protocol: str
    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    timeout: float = _DEFAULT_TIMEOUT
    gzip: bool = False
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None
    insecure: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OtlpSettings:
        """Read the settings; raise ``ValueError`` naming every invalid one."""
        problems: list[str] = []
        protocol = _setting(env, "PROTOCOL") or "http/protobuf"
        if protocol not in _PROTOCOLS:
            problems.append(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: llmledger_otlp sends {' or '.join(_PROTOCOLS)}"
            )
        timeout = _DEFAULT_TIMEOUT
        if (raw_timeout := _setting(env, "TIMEOUT")) is not None:
            try:
                timeout = float(raw_timeout)
                if timeout <= 0:
                    raise ValueError(raw_timeout)
            except ValueError:
                problems.append(
                    f"OTEL_EXPORTER_OTLP_TIMEOUT={raw_timeout!r} is not a positive number of seconds"
                )
                timeout = _DEFAULT_TIMEOUT
        compression = (_setting(env, "COMPRESSION") or "none").lower()
        if compression not in ("none", "gzip"):
            problems.append(f"OTEL_EXPORTER_OTLP_COMPRESSION={compression!r}: use gzip or none")
        if problems:
            raise ValueError("; ".join(problems))
        if protocol == "grpc":
            endpoint = _setting(env, "ENDPOINT") or "http://localhost:4317"
        elif traces_endpoint := (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or "").strip():
            endpoint = traces_endpoint
        else:
            base = (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip() or "http://localhost:4318"
            endpoint = base.rstrip("/") + _TRACES_PATH
        insecure_raw = (_setting(env, "INSECURE") or "false").lower()
        return cls(
            protocol=protocol,
            endpoint=endpoint,
            headers=dict(parse_env_headers(_setting(env, "HEADERS") or "", liberal=True)),
            timeout=timeout,
            gzip=compression == "gzip",
            certificate=_setting(env, "CERTIFICATE"),
            client_key=_setting(env, "CLIENT_KEY"),
            client_certificate=_setting(env, "CLIENT_CERTIFICATE"),
            insecure=insecure_raw in ("true", "1", "yes"),
        )


class Sender(Protocol):
    def send(self, payload: bytes, timeout: float) -> SendResult: ...

    def close(self) -> None: ...


def open_sender(settings: OtlpSettings) -> Sender:
    """The transport for ``settings.protocol``; ``ImportError`` with what to install if missing."""
    if settings.protocol == "grpc":
        return GrpcSender(settings)
    return HttpSender(settings)


def _ssl_context(settings: OtlpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.certificate)
    if settings.client_certificate:
        context.load_cert_chain(settings.client_certificate, settings.client_key)
    return context


class HttpSender:
    """OTLP/HTTP protobuf over one keep-alive connection (callers serialise ``send``)."""

    def __init__(self, settings: OtlpSettings) -> None:
        url = urlsplit(settings.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"OTLP endpoint {settings.endpoint!r} is not an http(s) URL")
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._context = _ssl_context(settings) if self._https else None
        self._gzip = settings.gzip
        self._headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"llmledger-instrumentation/{__version__}",
            **settings.headers,
        }
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        connection = self._connection
        if connection is not None:
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            return connection, True
        if self._https:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        self._connection = connection
        return connection, False

    def send(self, payload: bytes, timeout: float) -> SendResult:
        body = gzip.compress(payload, compresslevel=6) if self._gzip else payload
        for _ in range(2):
            connection, reused = self._connect(timeout)
            try:
                connection.request("POST", self._path, body, self._headers)
                response = connection.getresponse()
                answer = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused:
                    # The server closed an idle keep-alive connection; a fresh one is the retry
                    # every HTTP client makes (a request that did land is dropped by the
                    # collector as a repeat).
                    continue
                return SendResult(Delivery.RETRY, f"connection to {self._host}:{self._port} lost: {exc}")
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                return SendResult(Delivery.RETRY, f"cannot reach {self._host}:{self._port}: {exc}")
            if response.will_close:
                self.close()
            return _http_result(response.status, response.getheader("Retry-After"), answer)
        return SendResult(Delivery.RETRY, f"connection to {self._host}:{self._port} lost twice")

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _http_result(status: int, retry_after: str | None, body: bytes) -> SendResult:
    if 200 <= status < 300:
        return _DELIVERED
    detail = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
    if 400 <= status < 500 and status not in _HTTP_RETRYABLE_4XX:
        return SendResult(Delivery.REJECTED, detail)
    delay: float | None = None
    if retry_after is not None:
        try:
            delay = max(0.0, float(retry_after))
        except ValueError:
            delay = None
    return SendResult(Delivery.RETRY, detail, delay)


class GrpcSender:
    """OTLP/gRPC: the stored request bytes go out as they are (identity serializer)."""

    def __init__(self, settings: OtlpSettings) -> None:
        try:
            import grpc
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "llmledger_otlp with OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs grpcio: "
                "install opentelemetry-exporter-otlp-proto-grpc, or set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
            ) from exc
        self._grpc = grpc
        endpoint = settings.endpoint
        if "://" in endpoint:
            url = urlsplit(endpoint)
            secure = url.scheme == "https"
            target = url.netloc
        else:
            secure = not settings.insecure
            target = endpoint
        compression = grpc.Compression.Gzip if settings.gzip else None
        if secure:
            root = _read(settings.certificate)
            key = _read(settings.client_key)
            chain = _read(settings.client_certificate)
            credentials = grpc.ssl_channel_credentials(root, key, chain)
            self._channel = grpc.secure_channel(target, credentials, compression=compression)
        else:
            self._channel = grpc.insecure_channel(target, compression=compression)
        # No serializers: bytes in, bytes out.
        self._export: Any = self._channel.unary_unary(_GRPC_METHOD)  # pyright: ignore[reportUnknownMemberType]
        self._metadata = tuple((k.lower(), v) for k, v in settings.headers.items())

    def send(self, payload: bytes, timeout: float) -> SendResult:
        grpc = self._grpc
        try:
            self._export(payload, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            call = cast(Any, exc)
            code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
            detail = f"gRPC {code.name}: {call.details() if hasattr(call, 'details') else exc}"
            trailers: dict[str, Any] = (
                dict(call.trailing_metadata() or ()) if hasattr(call, "trailing_metadata") else {}
            )
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED):
                return SendResult(Delivery.REJECTED, detail)
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED and "grpc-status-details-bin" not in trailers:
                # Without retry advice this is gRPC's own message-size limit: final.
                return SendResult(Delivery.REJECTED, detail)
            return SendResult(Delivery.RETRY, detail, _retry_delay(trailers))
        return _DELIVERED

    def close(self) -> None:
        self._channel.close()


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as handle:
        return handle.read()


def _retry_delay(trailers: Mapping[str, Any]) -> float | None:
    """The server's ``google.rpc.RetryInfo`` delay, when it sent one and the protos are installed."""
    raw = trailers.get("grpc-status-details-bin")
    if not isinstance(raw, bytes):
        return None
    try:
        from google.rpc.error_details_pb2 import RetryInfo
        from google.rpc.status_pb2 import Status
    except ImportError:  # pragma: no cover - googleapis-common-protos comes with the gRPC exporter
        return None
    try:
        status: Any = Status.FromString(raw)
        for detail in status.details:
            info: Any = RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    except Exception:  # advice we cannot read is no advice
        return None
    return None
