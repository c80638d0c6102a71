"""An app under ``opentelemetry-instrument`` with ``OTEL_TRACES_EXPORTER=llmledger_otlp``.

Makes LLM-shaped calls ``--first``, ``--first + 1``, … and, once the SDK has handed a call's
span to the exporter (``force_flush``), prints ``done <span id>``; with ``--count`` it stops
after that many calls, else it runs until killed. The span is the one the instrumentation
would make (the tests in tests/instrumentation cover how it is made; here what matters is
where it goes).
"""

from __future__ import annotations

import argparse
import sys
import time

from opentelemetry import trace
from opentelemetry.trace import SpanKind


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.01)
    args = parser.parse_args()
    provider = trace.get_tracer_provider()
    tracer = trace.get_tracer("llmledger.instrumentation", "0.1.0")
    index = args.first
    while not args.count or index < args.first + args.count:
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.id": f"call-{index}",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 20,
                "gen_ai.usage.cost": 0.000435,
                "tenant.id": "buffered",
            },
        ) as span:
            span_id = format(span.get_span_context().span_id, "016x")
        provider.force_flush()  # type: ignore[attr-defined]  # the SDK's provider
        sys.stdout.write(f"done {span_id}\n")
        sys.stdout.flush()
        index += 1
        time.sleep(args.pause)


if __name__ == "__main__":
    main()
