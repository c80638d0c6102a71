"""Fixtures for the exporter tests: one real store per test session, a fresh database per test.

chDB hosts one engine path per process, so the session shares one embedded store and
each test gets its own database in it. With ``LLMLEDGER_TEST_CLICKHOUSE_URL`` set the
same tests run against that server instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.store import run_command, run_query
from llmledger.instrumentation.pricing import PriceBook, PriceRow

SERVER_URL = os.environ.get("LLMLEDGER_TEST_CLICKHOUSE_URL")
# store_url and store_client, the session's one store, live in tests/conftest.py.


@pytest.fixture(scope="session")
def bundled_prices() -> list[PriceRow]:
    """The price book of genai-prices' bundled data, as ``llmledger prices sync`` writes it
    (compiled once per session: a few seconds)."""
    return list(PriceBook().price_rows())


@pytest.fixture
def blank_config(store_url: str, store_client: Client) -> Iterator[StoreConfig]:
    """A config naming a fresh, empty database (dropped afterwards)."""
    config = StoreConfig(url=store_url, database=f"t_{uuid.uuid4().hex[:12]}")
    yield config
    run_command(store_client, f"DROP DATABASE IF EXISTS `{config.database}`")


@pytest.fixture
def config(blank_config: StoreConfig, store_client: Client) -> StoreConfig:
    """A fresh database with every migration applied."""
    apply_migrations(store_client, blank_config)
    return blank_config


class Recorder:
    """Real SDK spans: a TracerProvider whose finished spans are kept in memory."""

    def __init__(self, resource: dict[str, str], scope: str) -> None:
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create(resource))
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer(scope, "1.2.3")

    def call(
        self,
        name: str,
        attributes: dict[str, AttributeValue],
        *,
        start_ns: int = 1_767_225_600_000_000_000,  # 2026-01-01T00:00:00Z
        duration_ns: int = 1_250_000_000,
        error: str | None = None,
        kind: SpanKind = SpanKind.CLIENT,
    ) -> None:
        """Record one finished span with the given attributes and timing."""
        span = self.tracer.start_span(name, kind=kind, attributes=attributes, start_time=start_ns)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=start_ns + duration_ns)

    def finished(self) -> list[ReadableSpan]:
        return list(self.memory.get_finished_spans())


@pytest.fixture
def recorder() -> Recorder:
    return Recorder({"service.name": "test-app"}, "llmledger.instrumentation.openai")


@pytest.fixture
def make_recorder() -> Callable[..., Recorder]:
    def make(resource: dict[str, str] | None = None, scope: str = "test.scope") -> Recorder:
        return Recorder(resource or {"service.name": "test-app"}, scope)

    return make


Query = Callable[..., list[dict[str, Any]]]
ToOtlp = Callable[[Sequence[ReadableSpan]], ExportTraceServiceRequest]


@pytest.fixture
def to_otlp() -> ToOtlp:
    """The OTLP request the SDK's OTLP exporters would send for some spans."""
    return encode_spans


@pytest.fixture
def query(store_client: Client) -> Query:
    """Run SQL (with ``{name:Type}`` parameters) and return rows as dicts."""

    def run(sql: str, **parameters: object) -> list[dict[str, Any]]:
        result = run_query(store_client, sql, parameters=parameters)
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    return run


@pytest.fixture
def tmp_store_path(tmp_path: Path) -> Path:
    """A path for a store that a child process owns."""
    return tmp_path / "child-store"
