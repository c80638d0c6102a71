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

import contextlib
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
import threading
import time
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from llmledger.exporter._internal.config import StoreConfig, default_store_path
from llmledger.exporter._internal.demo.server import serve_demo_openai
from llmledger.exporter._internal.demo.summary import describe_app, describe_spans, legend, spans_by_scope
from llmledger.exporter._internal.money import UNPRICED, plain_decimal
from llmledger.exporter._internal.report import ReportQuery, ReportResult, client_runner, run_report
from llmledger.exporter._internal.store import open_store

__all__ = ["DEMO_MARKER", "default_demo_dir", "run_demo"]

DEMO_MARKER = ".llmledger-demo"
# The primary lead-scoring model is "overloaded" for a share of requests, so the app's
# fallback to the smaller model shows up in the data.
FAILING_MODELS = {"gpt-4.1": 0.35}
STEPS = 5
APP_TALLY = "app-tally.json"  # what the sample app did, for the summary
# How long the collector may drain its spool when stopped; then it exits, whatever is left
# stays in its spool for the next start.
COLLECTOR_STOP_SECONDS = 3
# How long the app gets to hand its last spans to the collector after Ctrl-C.
APP_STOP_SECONDS = 3


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


class _Children:
    """The demo's child processes, each in a session of its own so only the demo gets Ctrl-C."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[Any]] = []
        self.http_port = 0
        self.store = ""
        self.starting = False
        self.interrupt_pending = False
        self.stopping = False

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        # An interrupt while Popen runs would lose a started child: it waits until we hold it.
        self.starting = True
        try:
            process: subprocess.Popen[Any] = subprocess.Popen(command, start_new_session=True, **kwargs)  # noqa: S603 - our own interpreter and module
            self._processes.append(process)
        finally:
            self.starting = False
        if self.interrupt_pending:
            raise KeyboardInterrupt
        return process

    def run(
        self, command: list[str], *, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Like ``subprocess.run`` with captured text output, in a session of its own."""
        process = self.start(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(process, signal.SIGKILL, 0)
            raise DemoError(f"the sample app did not finish within {timeout:.0f}s") from None
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def stop(self, process: subprocess.Popen[Any], sig: int, grace: float) -> None:
        """Signal the process's group, wait up to ``grace`` seconds, then kill the group."""
        if process.poll() is None:
            _signal_group(process, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        # Its own children too (opentelemetry-instrument may leave one), whatever it did.
        _signal_group(process, signal.SIGKILL)
        if process.poll() is None:
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()

    def stop_all(self) -> int | None:
        """Stop the app, then the collector; how many spans the collector had written."""
        if not self._processes:
            return None
        collector, *apps = self._processes
        for app in apps:
            self.stop(app, signal.SIGINT, APP_STOP_SECONDS)
        # The app's last spans reach the store within the collector's linger: wait that long.
        written: float | None = None
        deadline = time.monotonic() + COLLECTOR_STOP_SECONDS
        while collector.poll() is None and time.monotonic() < deadline:
            received = _metric(self.http_port, "llmledger_collector_received_spans_total")
            written = _metric(self.http_port, "llmledger_collector_written_spans_total")
            if received is None or written is None or written >= received:
                break
            time.sleep(0.1)
        self.stop(collector, signal.SIGTERM, COLLECTOR_STOP_SECONDS + 5)
        return None if written is None else int(written)


def _signal_group(process: subprocess.Popen[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _interrupt_on_signals(children: _Children) -> Callable[[], None]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt, except while a child starts; returns what undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if children.starting:
            children.interrupt_pending = True
            return
        if children.stopping:
            return  # a second Ctrl-C while we stop everything: we are already on it
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def run_demo(directory: Path, out: TextIO) -> tuple[int, ReportResult | None]:
    # Ctrl-C reaches the demo alone (children run in sessions of their own) and the demo stops
    # them in order: the app first, while the collector can still take its last spans, then the
    # collector; `kill <demo pid>` (SIGTERM) does the same.
    children = _Children()
    restore = _interrupt_on_signals(children)
    try:
        return _run_demo(directory, out, children)
    except KeyboardInterrupt:
        children.stopping = True
        stopping = time.monotonic()
        written = children.stop_all()
        spans = "no spans" if written is None else f"{written} spans"
        where = f" to {children.store}" if children.store else ""
        out.write(
            f"\nllmledger demo: interrupted; stopped the app and the collector in "
            f"{time.monotonic() - stopping:.1f}s; {spans} written{where}\n"
        )
        out.flush()
        return 130, None
    finally:
        restore()


def _run_demo(directory: Path, out: TextIO, children: _Children) -> tuple[int, ReportResult | None]:
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
    children.http_port, children.store = http_port, store.display_url
    with serve_demo_openai(failing_models=FAILING_MODELS) as server, log_path.open("wb") as log:
        progress.step(f"local OpenAI-compatible server on {server.base_url}")
        progress.step(
            f"starting the collector (OTLP/HTTP 127.0.0.1:{http_port}) on the embedded store {store.display_url}"
        )
        collector = children.start(
            [sys.executable, "-m", "llmledger.exporter.cli", "collector", "--url", store.url,
             "--grpc-endpoint", "", "--http-endpoint", f"127.0.0.1:{http_port}",
             "--clickhouse-http-endpoint", "127.0.0.1:0",
             "--data-dir", str(directory / "collector"), "--fsync", "never",
             "--shutdown-timeout-seconds", str(COLLECTOR_STOP_SECONDS)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        interrupted = False
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
            app = children.run(
                [
                    str(instrument),
                    sys.executable,
                    "-m",
                    "llmledger.exporter._internal.demo.app",
                    str(tally_path),
                ],
                env=env,
                timeout=300,
            )
            if app.returncode != 0:
                out.write(f"the sample app failed (exit {app.returncode}):\n{app.stderr}\n")
                return 1, None
            tally = json.loads(tally_path.read_text())
            for line in describe_app(tally, time.monotonic() - started):
                progress.note(line)
            spans = _wait_written(http_port, timeout=60)
            client = open_store(store)  # the collector's ClickHouse HTTP interface, as every tool reads it
            try:
                by_scope = spans_by_scope(client_runner(client), store.database)
                progress.step(describe_spans(spans, by_scope) + "; asking it for the cost per tenant")
                result = run_report(client, store.database, ReportQuery(group_by=("tenant",)))
            finally:
                client.close()
        except DemoError as exc:
            out.write(f"llmledger demo: {exc}; the collector's log is {log_path}\n")
            return 1, None
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            # Interrupted: run_demo stops the app first, while the collector still runs.
            if not interrupted:
                children.stop(collector, signal.SIGTERM, COLLECTOR_STOP_SECONDS + 5)
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
