"""Writer throughput: spans -> rows -> embedded store, stage by stage, on one process.

Usage::

    .venv/bin/python bench/bench_writer.py                 # 20,000 spans/batch x 5 repetitions
    .venv/bin/python bench/bench_writer.py --batch 5000 --repeat 3 --json bench/.results/writer.json
    .venv/bin/python bench/bench_writer.py --without-cost      # spans the store prices itself

Spans are real OpenTelemetry SDK ``ReadableSpan`` objects carrying llmledger's span
contract (27 attributes, the shape of one chat call), made before timing starts. With
``--without-cost`` they carry no cost attributes (as other instrumentations' spans) and the
store's prices are synced first (``llmledger prices sync``), so the view chain prices every
span from ``model_prices``. Stages:

- ``convert (SDK)``: ``SpanRows.add_sdk_spans`` on the whole batch (attribute
  stringification included);
- ``convert (SDK, 512-span exports)``: the same spans added 512 at a time, as the direct
  exporter collects the SDK's exports into one insert;
- ``convert (OTLP)``: ``SpanRows.add_otlp`` on the same spans as an ``ExportTraceServiceRequest``;
- ``serialize (Native, clickhouse-connect)``: clickhouse-connect's generic writer building
  the insert body from the rows (what ``SpanWriter`` used before);
- ``serialize (Native, llmledger)``: ``native_block.encode_block``, the body ``SpanWriter`` sends;
- ``convert + serialize``: both of ours, the whole Python side of a write;
- ``insert, full chain``: ``SpanWriter.write`` (serialize + engine) into otel_traces with
  every materialized view attached (what production does);
- ``end to end``: convert (SDK) + ``SpanWriter.write``;
- ``... otel_traces only``: the same with every materialized view detached.

With ``--via-otlp``, the direct exporter's two possible ways in, from the SDK's 512-span
exports to the store (full chain), alternated repetition by repetition (issue 17):

- ``encode (OTLP, otlp_encode, 512-span exports)``: each export as OTLP request bytes
  (``llmledger.instrumentation.otlp_encode``);
- ``insert from OTLP (NativeInsert), full chain``: those requests inserted by the embedded
  engine decoding them (the collector's path on an embedded store);
- ``end to end via OTLP, full chain``: encode + a deduplication token over the bytes + insert;
- ``end to end via SpanRows, full chain (512-span exports)``: today's path, each export
  added to one ``SpanRows`` and written with ``SpanWriter``.

Each figure is the median of the repetitions, in spans per second of CPU time of this
process (``process_time``; chDB runs inside it, background merges included) and of wall
time. Before each stage the store's merges are left to finish, so a stage is not charged
for merging what earlier stages inserted. Standard library plus
the project's own packages.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.transform import NativeTransform
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llmledger.exporter import StoreConfig
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.native_block import encode_block
from llmledger.exporter._internal.rows import OTEL_TRACES_COLUMNS, SpanRows
from llmledger.exporter._internal.store import open_store, run_command, run_query
from llmledger.exporter._internal.writer import SpanWriter
from llmledger.instrumentation.otlp_encode import encode_trace_request

EXPORT_SIZE = 512  # the SDK BatchSpanProcessor's default export


_COST_ATTRIBUTES = (
    "gen_ai.usage.cost",
    "llmledger.cost.input",
    "llmledger.cost.output",
    "llmledger.cost.source",
)


def make_spans(count: int, *, with_cost: bool = True, first: int = 0) -> list[ReadableSpan]:
    """``count`` chat spans; response ids count from ``first`` (distinct calls across calls of this)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "crm", "deployment.environment": "prod"})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("llmledger.instrumentation.openai", "0.1.0")
    for i in range(count):
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.id": f"chatcmpl-{first + i:012d}",
            "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.request.stream": i % 4 == 0,
            "gen_ai.usage.input_tokens": 800 + i % 997,
            "gen_ai.usage.output_tokens": 40 + i % 211,
            "gen_ai.usage.cache_read.input_tokens": (i % 3) * 256,
            "gen_ai.usage.reasoning.output_tokens": 0,
            "gen_ai.conversation.id": f"conv-{i % 5000}",
            "gen_ai.usage.cost": (800 + i % 997) * 0.15e-6 + (40 + i % 211) * 0.6e-6,
            "llmledger.cost.input": (800 + i % 997) * 0.15e-6,
            "llmledger.cost.output": (40 + i % 211) * 0.6e-6,
            "llmledger.cost.source": "price_table",
            "llmledger.usage.estimated": False,
            "tenant.id": f"tenant-{i % 50}",
            "user.id": f"user-{i % 2000}",
            "session.id": f"session-{i % 10000}",
            "llmledger.feature": ("lead_scoring", "contact_extraction", "summary")[i % 3],
            "llmledger.fallback": i % 20 == 0,
            "llmledger.fallback.attempt": 1 if i % 20 == 0 else 0,
            "openai.api.type": "chat_completions",
            "openai.response.service_tier": "default",
            "server.address": "api.openai.com",
            "server.port": 443,
        }
        if i % 4 == 0:
            attributes["gen_ai.response.time_to_first_chunk"] = 0.25 + (i % 100) / 1000
        if not with_cost:
            for name in _COST_ATTRIBUTES:
                del attributes[name]
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=attributes):
            pass
    return list(memory.get_finished_spans())


def timed(
    action: Callable[[], object], repeat: int, before: Callable[[], object] | None = None
) -> tuple[float, float]:
    """Median (cpu seconds, wall seconds) of ``repeat`` runs; ``before`` runs untimed before each."""
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(repeat):
        if before is not None:
            before()
        c0, w0 = time.process_time(), time.perf_counter()
        action()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=20_000, help="spans per batch (one insert)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions per stage")
    parser.add_argument("--store", help="embedded store directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument(
        "--without-cost", action="store_true", help="spans without a cost, priced by the store's model_prices"
    )
    parser.add_argument(
        "--via-otlp", action="store_true", help="also the direct exporter's way through OTLP and NativeInsert"
    )
    args = parser.parse_args()

    store = args.store or tempfile.mkdtemp(prefix="llmledger-bench-")
    config = StoreConfig(url=f"chdb://{store}", database=f"bench_{uuid.uuid4().hex[:8]}")
    client = open_store(config, use_database=False, write=True)
    apply_migrations(client, config)
    if args.without_cost:
        # Through the CLI, as a user does (and whatever shape this version's model_prices has).
        from llmledger.exporter.cli import main as cli

        if cli(["prices", "sync", "--url", config.url, "--database", config.database]) != 0:
            return 1
    # As the exporter writes to an embedded store: attribute bloom filters left to the first merge.
    writer = SpanWriter(client, config.database, defer_attribute_indexes=config.embedded)

    spans = make_spans(args.batch, with_cost=not args.without_cost)
    request = encode_spans(spans)
    rows = SpanRows()
    rows.add_sdk_spans(spans)

    def convert_sdk() -> None:
        SpanRows().add_sdk_spans(spans)

    exports = [spans[start : start + EXPORT_SIZE] for start in range(0, len(spans), EXPORT_SIZE)]

    def convert_sdk_exports() -> None:
        collected = SpanRows()
        for export in exports:
            collected.add_sdk_spans(export)

    def convert_otlp() -> None:
        SpanRows().add_otlp(request)

    context = client.create_insert_context(
        table="otel_traces",
        database=config.database,
        column_names=[name for name, _ in OTEL_TRACES_COLUMNS],
        column_type_names=[type_name for _, type_name in OTEL_TRACES_COLUMNS],
        column_oriented=True,
    )

    columns = rows.columns  # dicts for clickhouse-connect, made outside its timing

    def serialize_clickhouse_connect() -> None:
        context.data = columns
        context.compression = None
        b"".join(NativeTransform.build_insert(context))

    def serialize_ours() -> None:
        encode_block(rows.span_columns())

    def convert_and_serialize() -> None:
        fresh = SpanRows()
        fresh.add_sdk_spans(spans)
        encode_block(fresh.span_columns())

    def insert() -> None:
        writer.write(rows, dedup_token=uuid.uuid4().hex)

    def end_to_end() -> None:
        fresh = SpanRows()
        fresh.add_sdk_spans(spans)
        writer.write(fresh, dedup_token=uuid.uuid4().hex)

    def settle() -> None:
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline
            and run_query(client, "SELECT count() FROM system.merges").result_rows[0][0]
        ):
            time.sleep(0.1)

    def forget_calls() -> None:
        # The same spans are written on every repetition: empty the per-call table first, so
        # every write meets calls the store has not seen (as in production) and not replays,
        # which the billed-once views (migration 0012) turn into no changes.
        tables = {
            name
            for (name,) in run_query(
                client,
                "SELECT name FROM system.tables WHERE database = {db:String}",
                parameters={"db": config.database},
            ).result_rows
        }
        # llm_call_index (0015) is what the views look calls up in.
        for table in ("llm_call_index", "llm_call_rows") if "llm_call_rows" in tables else ("llm_calls",):
            if table in tables:
                run_command(client, f"TRUNCATE TABLE `{config.database}`.`{table}`")
        settle()

    def measured(
        action: Callable[[], object], before: Callable[[], object] | None = None
    ) -> tuple[float, float]:
        settle()
        return timed(action, args.repeat, before)

    insert()  # warm up: first insert pays for imports and table loading
    results: dict[str, tuple[float, float]] = {}
    spreads: dict[str, tuple[float, float]] = {}
    if args.via_otlp:
        results.update(_via_otlp(client, config, writer, exports, args.repeat, forget_calls, settle, spreads))
    results |= {
        "convert (SDK)": measured(convert_sdk),
        "convert (SDK, 512-span exports)": measured(convert_sdk_exports),
        "convert (OTLP)": measured(convert_otlp),
        "serialize (Native, clickhouse-connect)": measured(serialize_clickhouse_connect),
        "serialize (Native, llmledger)": measured(serialize_ours),
        "convert + serialize": measured(convert_and_serialize),
        "insert, full chain": measured(insert, forget_calls),
        "end to end, full chain": measured(end_to_end, forget_calls),
    }
    views = run_query(
        client,
        "SELECT name FROM system.tables WHERE database = {db:String} AND engine = 'MaterializedView'",
        parameters={"db": config.database},
    ).result_rows
    for (view,) in views:
        run_command(client, f"DETACH TABLE `{config.database}`.`{view}`")
    results["insert, otel_traces only"] = measured(insert)
    results["end to end, otel_traces only"] = measured(end_to_end)
    client.close()

    print(
        f"{args.batch} spans per batch{' without a cost' if args.without_cost else ''}, "
        f"{args.repeat} repetitions, median; chDB {store}; "
        f"views detached for 'otel_traces only': {', '.join(view for (view,) in views)}"
    )
    print("| stage | spans/s (CPU) | spans/s (wall) | µs/span (CPU) |")
    print("|---|--:|--:|--:|")
    for stage, (cpu, wall) in results.items():
        spread = ""
        if stage in spreads:
            low, high = spreads[stage]
            spread = f" ({low / args.batch * 1e6:.1f}-{high / args.batch * 1e6:.1f})"
        print(
            f"| {stage} | {args.batch / cpu:,.0f} | {args.batch / wall:,.0f} "
            f"| {cpu / args.batch * 1e6:.1f}{spread} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "batch": args.batch,
                    "repeat": args.repeat,
                    "cpu_count": os.cpu_count(),
                    "python": sys.version.split()[0],
                    "stages": {k: {"cpu_s": c, "wall_s": w} for k, (c, w) in results.items()},
                },
                indent=2,
            )
        )
    return 0


def _via_otlp(
    client: Any,
    config: StoreConfig,
    writer: SpanWriter,
    exports: list[list[ReadableSpan]],
    repeat: int,
    forget_calls: Callable[[], None],
    settle: Callable[[], None],
    spreads: dict[str, tuple[float, float]],
) -> dict[str, tuple[float, float]]:
    """The direct exporter through OTLP and the engine's decoding, against SpanRows, alternated."""
    from llmledger.exporter._internal.collector.native_insert import NativeInsert

    native = NativeInsert(client, config.database, Path(tempfile.mkdtemp()) / "batch.bin")
    payloads = [encode_trace_request(export) for export in exports]

    def encode() -> None:
        for export in exports:
            encode_trace_request(export)

    def insert_otlp() -> None:
        assert native.write(payloads, uuid.uuid4().hex)

    def via_otlp() -> None:
        encoded = [encode_trace_request(export) for export in exports]
        digest = hashlib.blake2b(digest_size=16)
        for payload in encoded:
            digest.update(payload)
        # The token is computed as the exporter would, and made unique: the same spans are
        # written on every repetition and must not be dropped as a replay.
        assert native.write(encoded, f"llmledger-otlp-{digest.hexdigest()}-{uuid.uuid4().hex}")

    def via_rows() -> None:
        collected = SpanRows()
        for export in exports:
            collected.add_sdk_spans(export)
        writer.write(collected, dedup_token=f"{collected.dedup_token()}-{uuid.uuid4().hex}")

    settle()
    results = {
        "encode (OTLP, otlp_encode, 512-span exports)": timed(encode, repeat),
        "insert from OTLP (NativeInsert), full chain": timed(insert_otlp, repeat, forget_calls),
    }
    # The two ways in, alternated (order swapped every repetition), each after the same reset.
    runs: dict[str, list[tuple[float, float]]] = {"via_otlp": [], "via_rows": []}
    actions = {"via_otlp": via_otlp, "via_rows": via_rows}
    for index in range(2 * repeat):
        name = ("via_otlp", "via_rows")[(index + index // 2) % 2]
        forget_calls()
        runs[name].append(timed(actions[name], 1))
    for stage, name in (
        ("end to end via OTLP, full chain", "via_otlp"),
        ("end to end via SpanRows, full chain (512-span exports)", "via_rows"),
    ):
        cpu = [c for c, _ in runs[name]]
        results[stage] = (statistics.median(cpu), statistics.median(w for _, w in runs[name]))
        spreads[stage] = (min(cpu), max(cpu))
    native.close()
    return results


if __name__ == "__main__":
    sys.exit(main())
