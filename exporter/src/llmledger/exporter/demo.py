"""The demo's moving parts, for running llmledger's sample app outside ``llmledger demo``.

The compose stack's example app (``deploy/example-app``) uses these: a deterministic,
local OpenAI-compatible server (no API key, nothing spent; the models in
:data:`FAILING_MODELS` fail part of the time, so fallbacks show) and the multi-tenant
sample app, which makes its calls through the ``openai`` SDK configured from the
environment (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``). Run the app under
``opentelemetry-instrument`` and its spans carry tokens, cost and attribution::

    from llmledger.exporter.demo import FAILING_MODELS, DemoOpenAIServer, run_sample_app

    server = DemoOpenAIServer(failing_models=FAILING_MODELS).start()
    os.environ["OPENAI_BASE_URL"] = server.base_url
    os.environ["OPENAI_API_KEY"] = "sk-local-stand-in"
    run_sample_app()

Needs the ``demo`` extra (``pip install 'llmledger-exporter[demo]'``) for the SDK.
"""

from __future__ import annotations

from llmledger.exporter._internal.demo.app import main as run_sample_app
from llmledger.exporter._internal.demo.run import FAILING_MODELS
from llmledger.exporter._internal.demo.server import DemoOpenAIServer

__all__ = ["FAILING_MODELS", "DemoOpenAIServer", "run_sample_app"]
