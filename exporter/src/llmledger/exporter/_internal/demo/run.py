"""``llmledger demo``: the whole flow on an embedded store, in under a minute.

1. a local OpenAI-compatible server (deterministic, with usage, streams, embeddings and
   injected 503s),
2. the sample multi-tenant app (:mod:`.app`) in a real subprocess under
   ``opentelemetry-instrument``, its spans going to a store of the demo's own,
3. the cost report per tenant, read back from the store, and what to try next.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from llmledger.exporter._internal.config import StoreConfig, default_store_path
from llmledger.exporter._internal.demo.server import serve_demo_openai
from llmledger.exporter._internal.report import ReportQuery, ReportResult, run_report
from llmledger.exporter._internal.store import open_store

__all__ = ["DEMO_MARKER", "default_demo_store", "run_demo"]

DEMO_MARKER = ".llmledger-demo-store"
# The primary lead-scoring model is "overloaded" for a share of requests, so the app's
# fallback to the smaller model shows up in the data.
FAILING_MODELS = {"gpt-4.1": 0.35}


def default_demo_store() -> Path:
    return default_store_path().parent / "demo-store"


class Progress:
    def __init__(self, out: TextIO, steps: int) -> None:
        self._out = out
        self._steps = steps
        self._step = 0
        self._started = time.monotonic()

    def step(self, text: str) -> None:
        self._step += 1
        self._out.write(f"[{self._step}/{self._steps}] {text}\n")
        self._out.flush()

    def note(self, text: str) -> None:
        self._out.write(f"      {text}\n")
        self._out.flush()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started


def _prepare_store(path: Path) -> None:
    if path.exists():
        if not (path / DEMO_MARKER).exists() and any(path.iterdir()):
            raise RuntimeError(
                f"{path} exists and is not a demo store; pass --store with an empty or new directory"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / DEMO_MARKER).write_text("created by `llmledger demo`; safe to delete\n")


def run_demo(store: Path, out: TextIO) -> tuple[int, ReportResult | None]:
    progress = Progress(out, 4)
    store = store.expanduser().resolve()
    progress.step(f"preparing a fresh embedded store at {store}")
    _prepare_store(store)
    url = f"chdb://{store}"
    bin_dir = Path(sys.executable).parent
    instrument = bin_dir / "opentelemetry-instrument"
    if not instrument.exists():
        out.write(
            "opentelemetry-instrument is not installed next to this Python; install opentelemetry-distro\n"
        )
        return 2, None

    with serve_demo_openai(failing_models=FAILING_MODELS) as server:
        progress.step(f"local OpenAI-compatible server listening on {server.base_url}")
        progress.step("running the sample multi-tenant app under opentelemetry-instrument")
        env = {
            **os.environ,
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-demo-not-a-real-key",
            "OTEL_SERVICE_NAME": "llmledger-demo-app",
            "OTEL_TRACES_EXPORTER": "llmledger",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "LLMLEDGER_CLICKHOUSE_URL": url,
        }
        env.pop("LLMLEDGER_CLICKHOUSE_DATABASE", None)  # the demo store uses its default database
        started = time.monotonic()
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [str(instrument), sys.executable, "-m", "llmledger.exporter._internal.demo.app"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            out.write(f"the sample app failed (exit {done.returncode}):\n{done.stderr}\n")
            return 1, None
        summary = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "sample app finished"
        progress.note(f"{summary} in {time.monotonic() - started:.1f}s")

    progress.step("cost per tenant, read back from the store")
    config = StoreConfig.from_env({"LLMLEDGER_CLICKHOUSE_URL": url})
    client = open_store(config)
    try:
        result = run_report(client, config.database, ReportQuery(group_by=("tenant",)))
    finally:
        client.close()
    _print_report(result, out)
    out.write(_next_steps(url, progress.elapsed))
    return 0, result


def _print_report(result: ReportResult, out: TextIO) -> None:
    header = ["tenant", "calls", "errors", "fallbacks", "input_tokens", "output_tokens", "cost_usd"]
    index = [result.columns.index(c) for c in header]
    rows = [[str(row[i]) for i in index] for row in result.rows]
    totals = result.totals()
    rows.append(["TOTAL", *(str(totals[c]) for c in header[1:])])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    out.write("\n" + line + "\n" + "  ".join("-" * w for w in widths) + "\n")
    for row in rows:
        out.write(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            + "\n"
        )


def _next_steps(url: str, elapsed: float) -> str:
    return f"""
Done in {elapsed:.1f}s. Next:
  * the same data, your way:
      LLMLEDGER_CLICKHOUSE_URL={url} llmledger report --by tenant,feature,model
      LLMLEDGER_CLICKHOUSE_URL={url} llmledger sql "SELECT user_id, sum(cost_usd) FROM llm_calls GROUP BY user_id"
  * your own app: pip install llmledger-instrumentation opentelemetry-distro, then
      OTEL_TRACES_EXPORTER=llmledger opentelemetry-instrument python app.py
  * dashboards: the compose stack in deploy/ (ClickHouse, Grafana, the collector) — see deploy/README.md
"""
