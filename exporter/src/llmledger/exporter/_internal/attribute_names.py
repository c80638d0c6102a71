"""Every attribute and metric name the exporter's SQL and the dashboards read, in one list.

llmledger's own names come from the instrumentation's span contract
(:mod:`llmledger.instrumentation.attributes`); the others are what other GenAI
instrumentations write (OpenLLMetry/Traceloop, OpenInference, OpenLIT, Langfuse, older
semantic conventions; docs/storage.md says which column reads which), read so that their
spans are billed too. ``schema/views/*.sql`` and
``schema/expressions/*.sql`` name an attribute as ``${attr:NAME}``, rendered to the literal
``'NAME'``; grafana/build.py uses :func:`quoted_name`. A name that is not in the list is
refused when the SQL is rendered, so a typo fails schema apply and its tests instead of
reading an empty value for ever.
"""

from __future__ import annotations

import re
from typing import Final

from llmledger.instrumentation.attributes import METRIC_NAMES, SPAN_ATTRIBUTES

__all__ = ["KNOWN_NAMES", "OTHER_INSTRUMENTATIONS", "quoted_name", "render_attribute_names"]

OTHER_INSTRUMENTATIONS: Final = frozenset(
    {
        # Who a call is billed to, and for what.
        "traceloop.association.properties.tenant_id",
        "traceloop.association.properties.user_id",
        "traceloop.association.properties.session_id",
        "traceloop.workflow.name",
        "langfuse.user.id",
        "langfuse.session.id",
        "gen_ai.user",
        "gen_ai.request.user",
        "llm.user",
        # What was called.
        "gen_ai.system",
        "llm.provider",
        "llm.system",
        "llm.request.type",
        "openinference.span.kind",
        "llm.model_name",
        "gen_ai.openai.response.service_tier",
        "gen_ai.is_streaming",
        "llm.is_streaming",
        "gen_ai.server.time_to_first_token",
        # Tokens.
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.usage.prompt_tokens",
        "llm.usage.completion_tokens",
        "llm.token_count.prompt",
        "llm.token_count.completion",
        "gen_ai.usage.cache_read_input_tokens",
        "gen_ai.usage.cached_tokens",
        "llm.token_count.prompt_details.cache_read",
        "gen_ai.usage.cache_creation_input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "llm.token_count.prompt_details.cache_write",
        "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
        # Cost, where an instrumentation reports one.
        "gen_ai.usage.cost.amount",
        "gen_ai.usage.cost.currency",
        "gen_ai.usage.cost.source",
        "operation.cost",
        "llm.cost.total",
    }
)
KNOWN_NAMES: Final[frozenset[str]] = SPAN_ATTRIBUTES | METRIC_NAMES | OTHER_INSTRUMENTATIONS

_REFERENCE: Final = re.compile(r"\$\{attr:([^}]*)\}")


def quoted_name(name: str) -> str:
    """``name`` as a SQL string literal; ``ValueError`` unless it is in :data:`KNOWN_NAMES`."""
    if name not in KNOWN_NAMES:
        raise ValueError(
            f"{name!r} is not an attribute or metric name llmledger knows (a typo? else add it to "
            "llmledger.instrumentation's attributes or to attribute_names.OTHER_INSTRUMENTATIONS)"
        )
    return f"'{name}'"


def render_attribute_names(sql: str, where: str) -> str:
    """``sql`` with each ``${attr:NAME}`` replaced by ``'NAME'``, every name checked against the list."""
    try:
        return _REFERENCE.sub(lambda match: quoted_name(match.group(1)), sql)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
