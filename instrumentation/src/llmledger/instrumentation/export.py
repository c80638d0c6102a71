"""``llmledger_otlp``: the OTLP span exporter that keeps what the collector cannot take yet.

Zero-code: ``OTEL_TRACES_EXPORTER=llmledger_otlp opentelemetry-instrument python app.py``.
In code::

    from llmledger.instrumentation.export import BufferedOTLPSpanExporter
    provider.add_span_processor(BatchSpanProcessor(BufferedOTLPSpanExporter()))

Separate from :mod:`llmledger.instrumentation` because it needs the OpenTelemetry SDK, which
the instrumentation itself does not (it encodes OTLP itself: :mod:`.otlp_encode`; gRPC needs
``grpcio``). Settings: docs/configuration.md.
"""

from llmledger.instrumentation._internal.buffered_exporter import (
    BufferedOTLPSpanExporter,
    BufferSettings,
    BufferStats,
)

__all__ = ["BufferSettings", "BufferStats", "BufferedOTLPSpanExporter"]
