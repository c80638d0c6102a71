"""One store, one owner: every tool works while the collector ingests, and what stops a start is said plainly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx2
import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from llmledger.exporter import BudgetExceededError, BudgetGuard, StoreConfig
from llmledger.exporter._internal.store import open_store, run_query
from llmledger.exporter._internal.store_owner import current_owner, owner_file
from llmledger.instrumentation import LLMLedgerInstrumentor, attribution

from .harness import CollectorProcess, wait_for

LLMLEDGER = str(Path(sys.executable).parent / "llmledger")
CHDB_LOCK_NOISE = ("Cannot lock file", "Another server instance", "Code: 76")


def _cli(*args: str, store: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "LLMLEDGER_CLICKHOUSE_URL": store, **(env or {})}
    return subprocess.run(
        [LLMLEDGER, *args], capture_output=True, text=True, env=full_env, timeout=120, check=False
    )


def _collector_cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys; {prelude}from llmledger.exporter.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if k != "LLMLEDGER_CLICKHOUSE_URL"}
    return subprocess.run(
        [sys.executable, "-c", code, "collector", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path / "data", f"chdb://{tmp_path / 'store'}").start()
    yield process
    if process.process is not None and process.process.poll() is None:
        assert process.stop() == 0, process.log()


class _Sender:
    """The real OpenTelemetry SDK sending LLM spans over OTLP/HTTP, in the background."""

    def __init__(self, port: int) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": "busy-app"}))
        self.provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"), schedule_delay_millis=100
            )
        )
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tracer = self.provider.get_tracer("llmledger.instrumentation")
        while not self._stop.is_set():
            for _ in range(20):
                with tracer.start_as_current_span("chat gpt-4o-mini") as span:
                    span.set_attributes(
                        {
                            "gen_ai.operation.name": "chat",
                            "gen_ai.provider.name": "openai",
                            "gen_ai.request.model": "gpt-4o-mini",
                            "gen_ai.usage.input_tokens": 100,
                            "gen_ai.usage.output_tokens": 20,
                            "gen_ai.usage.cost": 0.000027,
                            "tenant.id": "acme",
                        }
                    )
                self.sent += 1
            time.sleep(0.05)

    def __enter__(self) -> _Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.provider.force_flush(30_000)
        self.provider.shutdown()


def test_every_command_works_while_the_collector_ingests(collector: CollectorProcess) -> None:
    store = collector.store_url
    with _Sender(collector.http_port) as sender:
        wait_for(lambda: collector.metric("written_spans_total") > 0, 30, "the first spans written")
        commands: list[tuple[str, ...]] = [
            ("schema", "status"),
            ("schema", "apply"),
            ("prices", "sync"),
            ("budget", "set", "acme", "0.5", "--hard"),
            ("budget", "set", "globex", "10"),
            ("budget", "list", "--format", "json"),
            ("budget", "check"),
            ("budget", "remove", "globex"),
            ("report", "--by", "tenant", "--format", "json"),
            ("sql", "SELECT count() AS n FROM llm_calls", "--format", "json"),
        ]
        results = {command: _cli(*command, store=store) for command in commands}
    for command, done in results.items():
        assert done.returncode == 0 or command == ("budget", "check"), (command, done.stderr)
        assert not any(noise in done.stderr for noise in CHDB_LOCK_NOISE), (command, done.stderr)
    budgets = json.loads(results[("budget", "list", "--format", "json")].stdout)
    assert {(b["tenant"], b["enforcement"]) for b in budgets} == {("acme", "hard"), ("globex", "soft")}
    assert results[("budget", "check")].returncode in (0, 1)
    report = json.loads(results[("report", "--by", "tenant", "--format", "json")].stdout)
    assert report[0]["tenant"] == "acme"
    # Nothing the SDK sent was lost or held back by the commands.
    wait_for(
        lambda: collector.scalar("SELECT count() FROM llm_calls") == sender.sent,
        30,
        "every span in the store",
    )
    remaining = _cli("budget", "list", "--format", "json", store=store)
    assert [b["tenant"] for b in json.loads(remaining.stdout)] == ["acme"]


def test_budget_guard_enforces_on_the_embedded_store(collector: CollectorProcess) -> None:
    with _Sender(collector.http_port):
        wait_for(lambda: collector.metric("written_spans_total") >= 40, 30, "some spend")
    assert _cli("budget", "set", "acme", "0.0000001", "--hard", store=collector.store_url).returncode == 0
    sent: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(
            200,
            json={
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )

    instrumentor = LLMLedgerInstrumentor()
    instrumentor.instrument(tracer_provider=TracerProvider())
    guard = BudgetGuard.from_store(StoreConfig(url=collector.store_url), refresh_s=3600)
    uninstall = guard.install()
    try:
        client = openai.OpenAI(
            api_key="k", http_client=httpx2.Client(transport=httpx2.MockTransport(handler))
        )
        with attribution(tenant_id="acme"), pytest.raises(BudgetExceededError):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        with attribution(tenant_id="globex"):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert len(sent) == 1
    finally:
        uninstall()
        instrumentor.uninstrument()


def test_a_second_collector_is_refused_while_the_first_keeps_serving(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    store = Path(collector.store_url.removeprefix("chdb://"))
    before = owner_file(store).read_text()
    second = _collector_cli(
        "--url", collector.store_url, "--data-dir", str(tmp_path / "other-data"),
        "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint", "127.0.0.1:0", "--clickhouse-http-endpoint", "127.0.0.1:0",
    )  # fmt: skip
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    owner = current_owner(store)
    assert owner is not None
    assert f"owned by llmledger collector PID {collector.pid}, serving {owner.url}" in lines[0]
    assert "collector ready" not in second.stderr
    assert owner_file(store).read_text() == before  # the refused one removed nothing
    with _Sender(collector.http_port) as sender:
        pass
    wait_for(
        lambda: collector.scalar("SELECT count() FROM llm_calls") == sender.sent,
        30,
        "the first still ingests",
    )


def test_a_dead_owners_file_is_replaced(tmp_path: Path) -> None:
    store = tmp_path / "store"
    stale = {
        "pid": 999999,
        "instance": "dead",
        "host": "127.0.0.1",
        "port": 1,
        "admin_password": "a",
        "readonly_password": "b",
    }
    store.mkdir()
    owner_file(store).write_text(json.dumps(stale))
    assert current_owner(store) is None  # nobody holds the lock: not an owner
    collector = CollectorProcess(tmp_path / "data", f"chdb://{store}").start()
    try:
        owner = current_owner(store)
        assert owner is not None
        assert owner.pid == collector.pid
    finally:
        assert collector.stop() == 0, collector.log()
    assert not owner_file(store).exists()


def test_start_up_problems_are_reported_together_before_ready(tmp_path: Path) -> None:
    with socket.socket() as taken_http, socket.socket() as taken_store:
        for sock in (taken_http, taken_store):
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
        http_port, store_port = taken_http.getsockname()[1], taken_store.getsockname()[1]
        done = _collector_cli(
            "--url", f"chdb://{tmp_path / 'store'}", "--data-dir", str(tmp_path / "data"),
            "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint", f"127.0.0.1:{http_port}",
            "--clickhouse-http-endpoint", f"127.0.0.1:{store_port}",
        )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert "--http-endpoint / LLMLEDGER_COLLECTOR_HTTP_ENDPOINT" in lines[0]
    assert "--clickhouse-http-endpoint / LLMLEDGER_COLLECTOR_CLICKHOUSE_HTTP_ENDPOINT" in lines[1]
    assert "Traceback" not in done.stderr
    assert not owner_file(tmp_path / "store").exists()


def test_a_missing_embedded_extra_is_a_start_up_error(tmp_path: Path) -> None:
    done = _collector_cli(
        "--url", f"chdb://{tmp_path / 'store'}", "--data-dir", str(tmp_path / "data"),
        "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint", "127.0.0.1:0", "--clickhouse-http-endpoint", "127.0.0.1:0",
        prelude="sys.modules['chdb'] = None; ",  # what an install without the extra looks like to find_spec
    )  # fmt: skip
    assert done.returncode == 2
    assert "needs chDB, which is not installed" in done.stderr
    assert "exporter[embedded]" in done.stderr
    assert "ready" not in done.stderr


def test_an_unwritable_data_directory_is_a_start_up_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = _collector_cli(
        "--url", f"chdb://{tmp_path / 'store'}", "--data-dir", str(blocker / "data"),
        "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint", "127.0.0.1:0", "--clickhouse-http-endpoint", "127.0.0.1:0",
    )  # fmt: skip
    assert done.returncode == 2
    assert f"the data directory {blocker / 'data'} is not writable" in done.stderr
    assert "--data-dir / LLMLEDGER_COLLECTOR_DATA_DIR" in done.stderr


def test_store_urls_need_an_absolute_path_and_reads_create_nothing(tmp_path: Path) -> None:
    relative = _cli("report", store="chdb://tmp/x")
    assert relative.returncode == 2
    assert "must name an absolute path, with three slashes: chdb:///absolute/path/to/store" in relative.stderr
    missing = tmp_path / "never-created"
    for command in (("report",), ("sql", "SELECT 1"), ("budget", "list"), ("schema", "status")):
        done = _cli(*command, store=f"chdb://{missing}")
        assert done.returncode == 2, (command, done.stderr)
        assert f"there is no llmledger store at {missing}" in done.stderr
        assert "llmledger schema apply" in done.stderr
        assert not missing.exists()


def test_open_store_reads_through_the_owner(collector: CollectorProcess) -> None:
    client = open_store(StoreConfig(url=collector.store_url))
    try:
        assert client.__class__.__name__ == "HttpClient"  # not a second engine in this process
        assert run_query(client, "SELECT 1").result_rows == [(1,)]
        assert Decimal(str(run_query(client, "SELECT toDecimal64(1, 2)").result_rows[0][0])) == Decimal(1)
    finally:
        client.close()
