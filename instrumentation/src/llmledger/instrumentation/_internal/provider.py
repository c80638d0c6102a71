"""Which provider a client talks to, from its base URL (semconv ``gen_ai.provider.name``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit

from llmledger.instrumentation._internal import attributes as A

# Host suffix → provider. Semantic-convention values where one exists.
_HOST_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("api.openai.com", "openai"),
    (".openai.azure.com", "azure.ai.openai"),
    (".cognitiveservices.azure.com", "azure.ai.openai"),
    (".services.ai.azure.com", "azure.ai.inference"),
    (".models.ai.azure.com", "azure.ai.inference"),
    ("api.groq.com", "groq"),
    ("api.deepseek.com", "deepseek"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.x.ai", "x_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("api.anthropic.com", "anthropic"),
    ("api.cohere.ai", "cohere"),
    ("api.cohere.com", "cohere"),
    ("api.together.xyz", "together"),
    ("api.together.ai", "together"),
    ("api.fireworks.ai", "fireworks"),
    ("openrouter.ai", "openrouter"),
    ("api.cerebras.ai", "cerebras"),
    ("api.moonshot.ai", "moonshotai"),
    ("dashscope.aliyuncs.com", "alibaba"),
    ("dashscope-intl.aliyuncs.com", "alibaba"),
    ("inference.ai.azure.com", "azure.ai.inference"),
    ("models.github.ai", "azure.ai.inference"),
    ("bedrock-runtime.amazonaws.com", "aws.bedrock"),
    ("api.huggingface.co", "huggingface"),
    ("router.huggingface.co", "huggingface"),
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    provider: str
    address: str | None
    port: int | None
    attributes: Mapping[str, str | int] = field(init=False, compare=False, repr=False)
    """``gen_ai.provider.name``, ``server.address``, ``server.port`` (when known), as spans and
    metrics both carry them: built once per endpoint, not per call."""

    def __post_init__(self) -> None:
        attrs: dict[str, str | int] = {A.PROVIDER_NAME: self.provider}
        if self.address is not None:
            attrs[A.SERVER_ADDRESS] = self.address
        if self.port is not None:
            attrs[A.SERVER_PORT] = self.port
        object.__setattr__(self, "attributes", attrs)  # frozen: set once, here


@lru_cache(maxsize=256)
def endpoint_for(base_url: str, is_azure_client: bool = False) -> Endpoint:
    """Provider, ``server.address`` and ``server.port`` for a client's base URL.

    An OpenAI-compatible host we do not recognise (a gateway, a local server) is reported
    as ``openai``: it speaks OpenAI's API and serves OpenAI's model names in the common
    case. ``server.address`` still tells the hosts apart.
    """
    try:
        parts = urlsplit(base_url)
        host = (parts.hostname or "").lower() or None
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        host, port = None, None
    provider = "azure.ai.openai" if is_azure_client else "openai"
    if host is not None and not is_azure_client:
        for suffix, name in _HOST_SUFFIXES:
            if host == suffix.lstrip(".") or host.endswith(suffix):
                provider = name
                break
    return Endpoint(provider, host, port)
