"""Zero-code: ``opentelemetry-instrument python app.py`` in a real subprocess produces our spans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.fake_openai_server import fake_openai_server

APP = textwrap.dedent(
    """
    import openai
    from llmledger.instrumentation import attribution, fallbacks

    client = openai.OpenAI(max_retries=0)
    with attribution(tenant_id="acme", user_id="u-1", feature="lead_scoring"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        for _ in client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "stream"}], stream=True
        ):
            pass
        client.embeddings.create(model="text-embedding-3-small", input="hello")
        with fallbacks():
            for model in ("fail-primary", "gpt-4o-mini"):
                try:
                    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
                    break
                except openai.APIStatusError:
                    pass
    print("APP-DONE")
    """
)


def _console_spans(stdout: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    spans: list[dict[str, Any]] = []
    index = 0
    while (start := stdout.find("{", index)) != -1:
        try:
            obj, index = decoder.raw_decode(stdout, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        if isinstance(obj, dict) and "context" in obj and "attributes" in obj:
            spans.append(obj)
    return spans


@pytest.mark.subprocess
def test_opentelemetry_instrument_loads_llmledger(tmp_path: Path, tiktoken_offline: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    bin_dir = Path(sys.executable).parent
    with fake_openai_server() as base_url:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "sk-test",
            "OTEL_SERVICE_NAME": "zero-code-app",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "TIKTOKEN_CACHE_DIR": str(tiktoken_offline),
        }
        done = subprocess.run(
            [str(bin_dir / "opentelemetry-instrument"), sys.executable, str(app)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "APP-DONE" in done.stdout
    spans = [s for s in _console_spans(done.stdout) if s["attributes"].get("gen_ai.operation.name")]
    by_name = [(s["name"], s["attributes"].get("llmledger.fallback")) for s in spans]
    assert by_name == [
        ("chat gpt-4o-mini", False),
        ("chat gpt-4o-mini", False),
        ("embeddings text-embedding-3-small", False),
        ("chat fail-primary", False),
        ("chat gpt-4o-mini", True),
    ]
    chat, stream, emb, failed, fallback = spans
    assert chat["kind"] == "SpanKind.CLIENT"
    assert chat["attributes"]["tenant.id"] == "acme"
    assert chat["attributes"]["gen_ai.usage.input_tokens"] == 42
    assert chat["attributes"]["server.address"] == "127.0.0.1"
    assert chat["resource"]["attributes"]["service.name"] == "zero-code-app"
    assert stream["attributes"]["gen_ai.usage.output_tokens"] == 4
    assert emb["attributes"]["gen_ai.usage.input_tokens"] == 5
    assert failed["attributes"]["error.type"] == "InternalServerError"
    assert failed["status"]["status_code"] == "ERROR"
    assert fallback["attributes"]["llmledger.fallback.attempt"] == 1
    assert chat["attributes"]["gen_ai.usage.cost"] > 0


SAMPLED_APP = textwrap.dedent(
    """
    import openai
    from opentelemetry import trace

    tracer = trace.get_tracer("app")
    client = openai.OpenAI(max_retries=0)
    for _ in range(1000):
        with tracer.start_as_current_span("handle request"):
            with tracer.start_as_current_span("load lead"):
                pass
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    print("APP-DONE")
    """
)


@pytest.mark.subprocess
def test_sampler_keeps_every_billed_call_of_a_sampled_service(tmp_path: Path, tiktoken_offline: Path) -> None:
    """At 1 %: all 1,000 LLM spans are exported, and of the rest exactly the traces the ratio keeps."""
    app = tmp_path / "app.py"
    app.write_text(SAMPLED_APP)
    bin_dir = Path(sys.executable).parent
    with fake_openai_server() as base_url:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "sk-test",
            "OTEL_SERVICE_NAME": "sampled-app",
            "OTEL_TRACES_SAMPLER": "llmledger_parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_BSP_MAX_QUEUE_SIZE": "10000",  # the console exporter must not be outrun into drops
            "TIKTOKEN_CACHE_DIR": str(tiktoken_offline),
        }
        done = subprocess.run(
            [str(bin_dir / "opentelemetry-instrument"), sys.executable, str(app)],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "APP-DONE" in done.stdout
    spans = _console_spans(done.stdout)
    llm = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "chat"]
    others = [s for s in spans if s["attributes"].get("gen_ai.operation.name") is None]
    assert len(llm) == 1000
    assert all(s["attributes"]["gen_ai.usage.input_tokens"] == 42 for s in llm)
    # The other spans are exactly those of the traces the 1 % trace-id ratio keeps, whole:
    ratio_bound = round(0.01 * 2**64)
    kept_traces = {
        s["context"]["trace_id"] for s in llm if int(s["context"]["trace_id"], 16) % 2**64 < ratio_bound
    }
    assert {s["context"]["trace_id"] for s in others} == kept_traces
    assert sorted(s["name"] for s in others) == sorted(["handle request", "load lead"] * len(kept_traces))
    assert 1 <= len(kept_traces) <= 40  # ~1 % of 1,000 traces (binomial: 10 ± 3)
    # An LLM span of a dropped trace is still under its (unexported) parent, marked as kept for billing.
    dropped = [s for s in llm if s["context"]["trace_id"] not in kept_traces]
    assert all(s["parent_id"] is not None and "llmledger" in s["context"]["trace_state"] for s in dropped)
