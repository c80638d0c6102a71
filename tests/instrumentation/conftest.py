"""Fixtures: the real OTel SDK (in-memory span exporter and metric reader), the real openai
SDK over ``httpx2.MockTransport`` answering with API-shaped bodies, sync and async alike."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmledger.instrumentation import LLMLedgerInstrumentor
from llmledger.instrumentation._internal.config import InstrumentationConfig

from . import api_payloads as P

Reply = httpx2.Response | Callable[[httpx2.Request], httpx2.Response] | BaseException


@dataclass
class FakeOpenAI:
    """An OpenAI-shaped HTTP endpoint: queue replies per path, inspect what was sent."""

    replies: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[httpx2.Request] = field(default_factory=list)

    def reply(self, path: str, *replies: Reply) -> None:
        self.replies.setdefault(path, []).extend(replies)

    def json(
        self, path: str, body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.reply(path, httpx2.Response(status, json=body, headers=headers or {"x-request-id": "req_123"}))

    def stream(
        self, path: str, events: list[dict[str, Any]], *, named: bool = False, done_marker: bool = True
    ) -> None:
        body = P.sse(events, named=named, done_marker=done_marker)
        self.reply(path, httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"}))

    def sent(self, index: int = -1) -> dict[str, Any]:
        return json.loads(self.requests[index].content)

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        path = request.url.path
        for key, queue in self.replies.items():
            if path.endswith(key) and queue:
                reply = queue.pop(0) if len(queue) > 1 else queue[0]
                if isinstance(reply, BaseException):
                    raise reply
                if callable(reply):
                    return reply(request)
                # A fresh response per request: a response object is bound to one client's I/O.
                return httpx2.Response(reply.status_code, headers=reply.headers, content=reply.content)
        return httpx2.Response(404, json=P.error_body(f"no fake reply for {path}"))


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def only_span(self) -> ReadableSpan:
        spans = self.finished()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def metric_points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points


def make_telemetry(resource: Any = None) -> Telemetry:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource) if resource is not None else TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return Telemetry(exporter, reader, tracer_provider, MeterProvider(metric_readers=[reader]))


@pytest.fixture
def telemetry() -> Telemetry:
    return make_telemetry()


@pytest.fixture
def instrument(telemetry: Telemetry) -> Iterator[Callable[..., LLMLedgerInstrumentor]]:
    """Instrument with chosen settings (defaults: env-free config); uninstrumented after the test."""
    instrumentor = LLMLedgerInstrumentor()

    def apply(**config: Any) -> LLMLedgerInstrumentor:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            config=InstrumentationConfig(**config),
        )
        return instrumentor

    yield apply
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture
def instrumented(instrument: Callable[..., LLMLedgerInstrumentor]) -> LLMLedgerInstrumentor:
    return instrument()


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@dataclass
class Api:
    """Runs one scenario through the sync or the async client, so tests are written once."""

    mode: str
    fake: FakeOpenAI
    base_url: str = "https://api.openai.com/v1"
    azure: bool = False

    @property
    def is_async(self) -> bool:
        return self.mode == "async"

    def _client(self) -> Any:
        transport = httpx2.MockTransport(self.fake.handler)
        common: dict[str, Any] = {"api_key": "sk-test", "max_retries": 0}
        if self.azure:
            common.update(azure_endpoint=self.base_url, api_version="2024-10-21")
            if self.is_async:
                return openai.AsyncAzureOpenAI(http_client=httpx2.AsyncClient(transport=transport), **common)
            return openai.AzureOpenAI(http_client=httpx2.Client(transport=transport), **common)
        if self.is_async:
            return openai.AsyncOpenAI(
                base_url=self.base_url, http_client=httpx2.AsyncClient(transport=transport), **common
            )
        return openai.OpenAI(base_url=self.base_url, http_client=httpx2.Client(transport=transport), **common)

    def call(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(client)``; awaited when the client is async."""
        if not self.is_async:
            return fn(self._client())

        async def run() -> Any:
            result = fn(self._client())
            return await result if inspect.isawaitable(result) else result

        return asyncio.run(run())

    def stream(self, fn: Callable[[Any], Any], limit: int | None = None) -> list[Any]:
        """Call ``fn(client)`` (a stream) and read it, all or its first ``limit`` items."""
        if not self.is_async:
            items: list[Any] = []
            for item in fn(self._client()):
                items.append(item)
                if limit is not None and len(items) >= limit:
                    break
            return items

        async def run() -> list[Any]:
            stream = fn(self._client())
            if inspect.isawaitable(stream):
                stream = await stream
            got: list[Any] = []
            async for item in stream:
                got.append(item)
                if limit is not None and len(got) >= limit:
                    break
            return got

        return asyncio.run(run())

    def run(self, sync_fn: Callable[[Any], Any], async_fn: Callable[[Any], Awaitable[Any]]) -> Any:
        """For flows whose sync and async spelling differ (``with`` vs ``async with``)."""
        if not self.is_async:
            return sync_fn(self._client())

        async def run() -> Any:
            return await async_fn(self._client())

        return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, fake: FakeOpenAI) -> Api:
    return Api(request.param, fake)
