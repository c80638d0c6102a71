"""``llmledger demo``: the whole flow on an embedded store, in under a minute.

1. a local OpenAI-compatible server (deterministic, with usage, streams, embeddings and
   injected 503s),
2. ``llmledger collector`` in a subprocess, owning a fresh embedded store of the demo's own,
3. the sample multi-tenant app (:mod:`.app`) in a real subprocess under
   ``opentelemetry-instrument``, sending its spans to the collector over OTLP/HTTP,
4. the cost report per tenant, asked of the running collector (which owns the store), and
   what to try next.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from llmledger.exporter._internal.config import StoreConfig, default_store_path
from llmledger.exporter._internal.demo.server import serve_demo_openai
from llmledger.exporter._internal.demo.summary import describe_app, describe_spans, legend, spans_by_scope
from llmledger.exporter._internal.money import UNPRICED, plain_decimal
from llmledger.exporter._internal.report import ReportQuery, ReportResult, collector_runner, run_report

__all__ = ["DEMO_MARKER", "default_demo_dir", "run_demo"]

DEMO_MARKER = ".llmledger-demo"
# The primary lead-scoring model is "overloaded" for a share of requests, so the app's
# fallback to the smaller model shows up in the data.
FAILING_MODELS = {"gpt-4.1": 0.35}
STEPS = 5
APP_TALLY = "app-tally.json"  # what the sample app did, for the summary


class DemoError(RuntimeError):
    pass


def default_demo_dir() -> Path:
    return default_store_path().parent / "demo"


class Progress:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._step = 0
        self._started = time.monotonic()

    def step(self, text: str) -> None:
        self._step += 1
        self._out.write(f"[{self._step}/{STEPS}] {text}\n")
        self._out.flush()

    def note(self, text: str) -> None:
        self._out.write(f"      {text}\n")
        self._out.flush()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started


def _prepare(directory: Path) -> None:
    if directory.exists():
        if not (directory / DEMO_MARKER).exists() and any(directory.iterdir()):
            raise DemoError(
                f"{directory} exists and is not a demo directory; pass --dir with an empty or new one"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / DEMO_MARKER).write_text("created by `llmledger demo`; safe to delete\n")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, flags=re.M)
    return float(match.group(1)) if match else None


def _wait_ready(collector: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if collector.poll() is not None:
            raise DemoError(f"the collector exited with code {collector.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise DemoError(f"the collector was not ready within {timeout:.0f}s")


def _wait_written(port: int, timeout: float) -> int:
    """Until every span the collector received is in the store; returns how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        received = _metric(port, "llmledger_collector_received_spans_total")
        written = _metric(port, "llmledger_collector_written_spans_total")
        if received is not None and written is not None and received > 0 and written >= received:
            return int(written)
        time.sleep(0.1)
    raise DemoError(f"the collector had not written every span to the store after {timeout:.0f}s")


def run_demo(directory: Path, out: TextIO) -> tuple[int, ReportResult | None]:
    progress = Progress(out)
    directory = directory.expanduser().resolve()
    try:
        _prepare(directory)
    except DemoError as exc:
        out.write(f"llmledger demo: {exc}\n")
        return 2, None
    store = StoreConfig.from_env({"LLMLEDGER_CLICKHOUSE_URL": f"chdb://{directory / 'store'}"})
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    missing = [
        name
        for name, present in (
            ("opentelemetry-instrument", instrument.exists()),
            ("the openai SDK", importlib.util.find_spec("openai") is not None),
            ("the embedded store (chdb)", importlib.util.find_spec("chdb") is not None),
        )
        if not present
    ]
    if missing:
        out.write(
            f"llmledger demo: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing; install the demo's extras (from the checkout): "
            f"pip install {_checkout_source('instrumentation')} '{_checkout_source('exporter')}[embedded,demo]'\n"
        )
        return 2, None
    log_path = directory / "collector.log"
    http_port = _free_port()
    with serve_demo_openai(failing_models=FAILING_MODELS) as server, log_path.open("wb") as log:
        progress.step(f"local OpenAI-compatible server on {server.base_url}")
        progress.step(
            f"starting the collector (OTLP/HTTP 127.0.0.1:{http_port}) on the embedded store {store.display_url}"
        )
        collector = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "llmledger.exporter.cli", "collector", "--url", store.url,
             "--grpc-endpoint", "", "--http-endpoint", f"127.0.0.1:{http_port}",
             "--data-dir", str(directory / "collector"), "--fsync", "never"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait_ready(collector, http_port, timeout=60)
            progress.step("running the sample multi-tenant app under opentelemetry-instrument")
            env = {
                **os.environ,
                "OPENAI_BASE_URL": server.base_url,
                "OPENAI_API_KEY": "sk-demo-not-a-real-key",
                "OTEL_SERVICE_NAME": "llmledger-demo-app",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "otlp",  # the GenAI metrics land in otel_metrics_*
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http_port}",
            }
            started = time.monotonic()
            tally_path = directory / APP_TALLY
            app = subprocess.run(  # noqa: S603 - our own interpreter and module
                [str(instrument), sys.executable, "-m", "llmledger.exporter._internal.demo.app", str(tally_path)],
                env=env, capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            if app.returncode != 0:
                out.write(f"the sample app failed (exit {app.returncode}):\n{app.stderr}\n")
                return 1, None
            tally = json.loads(tally_path.read_text())
            for line in describe_app(tally, time.monotonic() - started):
                progress.note(line)
            spans = _wait_written(http_port, timeout=60)
            by_scope = spans_by_scope(collector_runner(store), store.database)
            progress.step(describe_spans(spans, by_scope) + "; asking it for the cost per tenant")
            result = run_report(collector_runner(store), store.database, ReportQuery(group_by=("tenant",)))
        except DemoError as exc:
            out.write(f"llmledger demo: {exc}; the collector's log is {log_path}\n")
            return 1, None
        finally:
            collector.send_signal(signal.SIGTERM)
            try:
                collector.wait(timeout=30)
            except subprocess.TimeoutExpired:
                collector.kill()
                collector.wait()
    progress.step("stopped the collector")
    _print_report(result, out)
    out.write(legend(result.totals(), tally))
    out.write(_next_steps(store.url, progress.elapsed))
    return 0, result


def _cell(value: object) -> str:
    if value is None:
        return UNPRICED  # only the cost can be unknown
    return plain_decimal(value) if isinstance(value, Decimal) else str(value)


def _print_report(result: ReportResult, out: TextIO) -> None:
    header = ["tenant", "calls", "errors", "fallbacks", "input_tokens", "output_tokens", "cost_usd"]
    index = [result.columns.index(c) for c in header]
    total = result.total_row()
    rows = [[_cell(row[i]) for i in index] for row in result.presented()]
    rows.append(["TOTAL", *(_cell(total[i]) for i in index[1:])])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out.write("\n" + line(header) + "\n" + "  ".join("-" * w for w in widths) + "\n")
    for row in rows:
        out.write(line(row) + "\n")


def _checkout_source(part: str) -> str:
    """What to ``pip install`` for ``instrumentation`` or ``exporter``: the distributions are not
    on a package index, so it is that directory of the checkout this llmledger came from."""
    package = importlib.import_module(f"llmledger.{part}")
    # .../<part>/src/llmledger/<part>/__init__.py in a checkout (an editable install)
    project = Path(str(package.__file__)).resolve().parents[3]
    if (project / "pyproject.toml").is_file() and project.name == part:
        return str(project)
    return f"<your llmledger checkout>/{part}"


def _next_steps(url: str, elapsed: float) -> str:
    bin_dir = Path(sys.executable).parent
    on_path = shutil.which("llmledger") == str(bin_dir / "llmledger")
    activate = (
        ""
        if on_path
        else f"\n  (the commands below live in {bin_dir}: run `source {bin_dir / 'activate'}` first)"
    )
    return f"""
Done in {elapsed:.1f}s. Next:{activate}
  * the same data, your way:
      LLMLEDGER_CLICKHOUSE_URL={url} llmledger report --by tenant,feature,model
      LLMLEDGER_CLICKHOUSE_URL={url} llmledger sql "SELECT user_id, sum(cost_usd) AS spend FROM llm_calls GROUP BY user_id"
  * your own app: run `llmledger collector`, then in your app's environment
      pip install {_checkout_source("instrumentation")} opentelemetry-distro opentelemetry-exporter-otlp
      OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf opentelemetry-instrument python app.py
  * an OpenAI-compatible stand-in for your own tries (no key, nothing spent): llmledger demo --serve-api
  * dashboards: the compose stack in deploy/ (ClickHouse, Grafana, the collector) - see deploy/README.md
"""
