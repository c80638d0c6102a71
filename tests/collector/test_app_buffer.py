"""The app-side buffered exporter (``llmledger_otlp``) against a real collector that goes away.

Real OpenTelemetry SDK, real collector subprocess on fixed ports (so a restarted collector is
where the app expects it), real embedded store. Every call the app made lands in
``llm_calls`` exactly once: while the collector is stopped the spans wait on disk, and a
process killed with SIGKILL leaves them to the next process of the app.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from llmledger.instrumentation.export import BufferedOTLPSpanExporter
from tests.polling import SLOW_MACHINE_SECONDS

from .conftest import free_port
from .harness import CollectorProcess, make_request, span_ids, wait_for

WORKER = Path(__file__).with_name("buffered_app_worker.py")
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")


def _collector(tmp_path: Path, http_port: int, grpc_port: int) -> CollectorProcess:
    return CollectorProcess(
        tmp_path / "data",
        f"chdb://{tmp_path / 'store'}",
        args=["--http-endpoint", f"127.0.0.1:{http_port}", "--grpc-endpoint", f"127.0.0.1:{grpc_port}"],
    )


def _calls_by_span(collector: CollectorProcess, tenant: str) -> dict[str, int]:
    """Rows per span in llm_calls, and in otel_traces (llm_calls counts one provider response
    once whatever happened below it; the raw table shows whether a span was stored twice)."""
    calls = collector.query(
        "SELECT lower(SpanId), count() FROM llm_calls WHERE tenant_id = {tenant:String} GROUP BY SpanId",
        {"tenant": tenant},
    ).result_rows
    raw = {
        str(span): int(n)
        for span, n in collector.query(
            "SELECT lower(SpanId), count() FROM otel_traces"
            " WHERE SpanAttributes['tenant.id'] = {tenant:String} OR ResourceAttributes['tenant.id'] = {tenant:String}"
            " GROUP BY SpanId",
            {"tenant": tenant},
        ).result_rows
    }
    assert {span for span, _ in calls} <= set(raw)
    return {str(span): max(int(n), int(raw[span])) for span, n in calls}


def _wait_for_calls(collector: CollectorProcess, tenant: str, expected: set[str]) -> dict[str, int]:
    seen: dict[str, int] = {}

    def landed() -> bool:
        nonlocal seen
        seen = _calls_by_span(collector, tenant)
        return expected <= set(seen)

    wait_for(landed, SLOW_MACHINE_SECONDS, f"{len(expected)} calls in llm_calls", interval=0.5)
    return seen


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


def test_a_repeated_request_is_acknowledged_and_stored_once(tmp_path: Path, ports: tuple[int, int]) -> None:
    collector = _collector(tmp_path, *ports).start()
    try:
        first, other = make_request(5, seed=1, tenant="repeats"), make_request(5, seed=2, tenant="repeats")
        for request in (first, first, other, first):
            status, _, _ = collector.post_traces(request.SerializeToString())
            assert status == 200
        seen = _wait_for_calls(collector, "repeats", set(span_ids(first) + span_ids(other)))
        assert set(seen.values()) == {1}
        assert collector.metric("repeated_requests_total") == 2
        assert collector.metric("received_spans_total") == 10
        wait_for(lambda: collector.metric("written_spans_total") == 10, 30, "every received span written")
        # Remembered across a restart: a sender that got no answer before it may repeat after it.
        collector.stop()
        collector = _collector(tmp_path, *ports).start()
        status, _, _ = collector.post_traces(first.SerializeToString())
        assert status == 200
        assert collector.metric("repeated_requests_total") == 1
        assert set(_calls_by_span(collector, "repeats").values()) == {1}
    finally:
        collector.stop()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_collector_stopped_and_restarted_during_a_run(
    tmp_path: Path, ports: tuple[int, int], protocol: str
) -> None:
    http_port, grpc_port = ports
    collector = _collector(tmp_path, http_port, grpc_port).start()
    endpoint = (
        f"http://127.0.0.1:{http_port}" if protocol == "http/protobuf" else f"http://127.0.0.1:{grpc_port}"
    )
    exporter = BufferedOTLPSpanExporter(
        buffer_dir=tmp_path / "buffer",
        environ={"OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "buffered-app"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=16))
    tracer = provider.get_tracer("llmledger.instrumentation", "0.1.0")
    made: set[str] = set()

    def calls(count: int) -> None:
        for _ in range(count):
            with tracer.start_as_current_span(
                "chat gpt-4o-mini",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 10,
                    "gen_ai.usage.output_tokens": 2,
                    "tenant.id": protocol,
                },
            ) as span:
                made.add(format(span.get_span_context().span_id, "016x"))
            provider.force_flush()

    try:
        calls(40)
        assert exporter.stats().buffered_spans == 0
        collector.stop()
        calls(40)  # the collector is gone: these wait on disk
        stats = exporter.stats()
        assert stats.pending_spans == 40
        assert not stats.collector_reachable
        collector = _collector(tmp_path, http_port, grpc_port).start()
        calls(40)  # queued behind the backlog until the retry finds the collector back
        wait_for(lambda: exporter.stats().pending_batches == 0, SLOW_MACHINE_SECONDS, "the backlog delivered")
        seen = _wait_for_calls(collector, protocol, made)
        assert set(seen) == made
        assert set(seen.values()) == {1}
        stats = exporter.stats()
        assert stats.buffered_spans >= 40
        assert stats.redelivered_spans == stats.buffered_spans
        assert stats.dropped_spans == {}
        provider.shutdown()
        # Everything delivered: nothing left for a successor to adopt.
        assert list((tmp_path / "buffer").iterdir()) == []
    finally:
        provider.shutdown()
        collector.stop()


def _start_app(tmp_path: Path, http_port: int, first: int, count: int = 0) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "buffered-app",
        "OTEL_TRACES_EXPORTER": "llmledger_otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "LLMLEDGER_OTLP_BUFFER_DIR": str(tmp_path / "buffer"),
    }
    command = [str(INSTRUMENT), sys.executable, str(WORKER), "--first", str(first), "--count", str(count)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _read_done(app: subprocess.Popen[str], count: int) -> list[str]:
    assert app.stdout is not None
    done: list[str] = []
    while len(done) < count:
        line = app.stdout.readline()
        assert line, f"the app exited (code {app.poll()}) after {len(done)} calls"
        done.append(line.split()[1])
    return done


def _kill(app: subprocess.Popen[str]) -> list[str]:
    """SIGKILL the app; the calls it reported before dying (some still unread in the pipe)."""
    app.send_signal(signal.SIGKILL)
    app.wait(10)
    assert app.stdout is not None
    return [line.split()[1] for line in app.stdout.read().splitlines() if line.startswith("done ")]


def test_app_killed_mid_run_then_restarted_lands_every_call_once(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    http_port, grpc_port = ports
    collector = _collector(tmp_path, http_port, grpc_port).start()
    app = _start_app(tmp_path, http_port, first=0)
    try:
        made = _read_done(app, 30)  # delivered straight away
        collector.stop()
        made += _read_done(app, 30)  # kept on disk by the running app
        collector = _collector(tmp_path, http_port, grpc_port).start()
        made += _read_done(app, 20)  # the app's retry finds the collector and delivers its backlog
        made += _kill(app)  # mid-run: whatever it had not delivered stays on disk
        collector.stop()
        # SIGKILL while the collector is away: everything after this point is only on disk.
        collector = _collector(tmp_path, http_port, grpc_port)
        app = _start_app(tmp_path, http_port, first=1000)
        made += _read_done(app, 20)
        made += _kill(app)
        collector.start()
        # The next process of the app adopts both dead processes' files and delivers them.
        app = _start_app(tmp_path, http_port, first=2000, count=20)
        made += _read_done(app, 20)
        assert app.wait(60) == 0
        seen = _wait_for_calls(collector, "buffered", set(made))
        duplicated = {
            span: (n, made.index(span) if span in made else None) for span, n in seen.items() if n != 1
        }
        assert not duplicated, duplicated  # span: (times stored, its place in the run)
        # Calls interrupted by a SIGKILL before the app reported them may be there too, once.
        assert len(seen) - len(made) <= 2
        assert list((tmp_path / "buffer").glob("*.otlpbuf")) == []
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        if collector.process is not None and collector.process.poll() is None:
            collector.stop()
