"""OpenTelemetry SDK spans as OTLP request bytes, without the SDK's protobuf encoder.

:func:`encode_trace_request` gives the bytes of the ``ExportTraceServiceRequest`` that
carries a batch of spans: the same bytes as ``encode_spans(spans).SerializeToString()``
from opentelemetry-exporter-otlp-proto-common (plus each link's trace state, which that
encoder leaves out), at a small fraction of its cost. ``llmledger_otlp`` sends these bytes;
anything else that holds SDK spans and wants OTLP can use it too. Needs the OpenTelemetry SDK.
"""

from llmledger.instrumentation._internal.otlp_encode import encode_trace_request

__all__ = ["encode_trace_request"]
