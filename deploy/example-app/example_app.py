"""The compose stack's example app: llmledger's sample app in a loop, against a local stand-in.

Runs under ``opentelemetry-instrument`` (see the Dockerfile), so the llmledger instrumentor
and the OTLP exporter come from the environment exactly as in a user's app. The OpenAI
API is a local, deterministic stand-in (the one ``llmledger demo`` uses), so the stack
needs no API key and spends nothing; its primary lead-scoring model fails now and then,
so the Reliability dashboard has fallbacks to show.
"""

from __future__ import annotations

import os
import sys
import time

from llmledger.exporter.demo import FAILING_MODELS, DemoOpenAIServer, run_sample_app


def main() -> int:
    server = DemoOpenAIServer(failing_models=FAILING_MODELS).start()
    os.environ["OPENAI_BASE_URL"] = server.base_url
    os.environ["OPENAI_API_KEY"] = "sk-local-stand-in"
    interval = float(os.environ.get("EXAMPLE_APP_INTERVAL_SECONDS", "60"))
    while True:
        run_sample_app()
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
