"""The direct exporter as an app runs it: SDK spans -> BatchSpanProcessor -> llmledger -> embedded store.

Usage::

    .venv/bin/python bench/bench_direct_exporter.py                  # 200,000 spans, both modes
    .venv/bin/python bench/bench_direct_exporter.py --spans 100000 --json bench/.results/direct.json

The SDK's ``BatchSpanProcessor`` with its default export batch (512 spans; the queue is
made large enough that nothing is dropped, and the count in the store is checked) feeds
``ClickHouseSpanExporter`` on a fresh embedded store. Two modes, each in its own process
(chDB allows one store per process):

- ``coalesced``: the exporter's defaults (pending batch written at 20,000 spans or 1 s);
- ``per export``: ``max_delay_s=0``, one insert per SDK batch (what the exporter did
  before it coalesced).

Spans carry llmledger's contract (27 attributes, as in ``bench_writer.py``). Reported:
process CPU per span from the first span to the end of ``shutdown()`` and of background
merges settling, minus the CPU the same spans cost with an exporter that drops them
(the app's own span creation), as spans/s of exporter CPU; and wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("coalesced", "per export", "dropped (baseline)")


def run_mode(mode: str, spans: int) -> dict[str, Any]:
    from bench_writer import make_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanKind

    from llmledger.exporter import ClickHouseSpanExporter, StoreConfig
    from llmledger.exporter._internal.store import open_store

    store = tempfile.mkdtemp(prefix="llmledger-bench-direct-")
    config = StoreConfig(url=f"chdb://{store}", database="bench")
    exporter: SpanExporter
    if mode == "dropped (baseline)":

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        exporter = Drop()
    else:
        exporter = ClickHouseSpanExporter(config, max_delay_s=0 if mode == "per export" else None)
        exporter.force_flush()  # open the store and apply the schema before timing
    provider = TracerProvider(resource=Resource.create({"service.name": "crm"}))
    # Default export batch (512) and delay; a queue that never drops, so every span counts.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=spans + 1))
    tracer = provider.get_tracer("llmledger.instrumentation.openai", "0.1.0")
    attributes = [dict(span.attributes or {}) for span in make_spans(1000)]
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(spans):
        with tracer.start_as_current_span(
            "chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=attributes[i % 1000]
        ):
            pass
    provider.shutdown()
    written = spans
    if isinstance(exporter, ClickHouseSpanExporter):
        client = open_store(config)
        while client.query("SELECT count() FROM system.merges").result_rows[0][0]:
            time.sleep(0.2)
        written = int(client.query("SELECT count() FROM bench.otel_traces").result_rows[0][0])
        client.close()
    return {
        "mode": mode,
        "spans": spans,
        "written": written,
        "cpu_s": time.process_time() - c0,
        "wall_s": time.perf_counter() - w0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in a child
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.spans)))
        return 0
    results: list[dict[str, Any]] = []
    for mode in MODES:
        child = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--spans", str(args.spans)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    base = results[-1]["cpu_s"]
    print(f"{args.spans:,} spans through BatchSpanProcessor (export batch 512) into a fresh embedded store")
    print("| mode | written | exporter CPU µs/span | spans/s (exporter CPU) | wall s |")
    print("|---|--:|--:|--:|--:|")
    for r in results[:-1]:
        per_span = (r["cpu_s"] - base) / r["spans"]
        print(
            f"| {r['mode']} | {r['written']:,} | {per_span * 1e6:.1f} | {1 / per_span:,.0f} | {r['wall_s']:.1f} |"
        )
    print(f"(the app's own span creation: {base / args.spans * 1e6:.1f} µs/span, subtracted)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"spans": args.spans, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
