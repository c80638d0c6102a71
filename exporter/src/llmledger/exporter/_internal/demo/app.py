"""The demo's sample app: a small multi-tenant SaaS backend calling OpenAI, run under
``opentelemetry-instrument`` exactly as a user's app would be.

Three tenants, several users and features; a lead-scoring flow that falls back to a
smaller model when the primary is overloaded; a streamed support chat; structured
extraction with ``parse``; embeddings for search; summaries on the Responses API.
Everything is billed through :func:`llmledger.instrumentation.attribution`.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import openai
from opentelemetry import trace
from pydantic import BaseModel

from llmledger.exporter._internal.demo.summary import APP_SCOPE
from llmledger.instrumentation import attribution, fallbacks

TENANTS: dict[str, list[str]] = {
    "acme": ["alice@acme.io", "bob@acme.io", "carol@acme.io"],
    "globex": ["hank@globex.com", "marge@globex.com"],
    "initech": ["peter@initech.com"],
}
LEADS = ["Northwind Traders", "Contoso Ltd", "Fabrikam", "Tailspin Toys", "Wingtip", "Litware"]

LEAD_MODELS = ("gpt-4.1", "gpt-4.1-mini")  # the primary, then the fallback when it fails

# The app's own spans (one per lead scoring, the parent of its attempts).
tracer = trace.get_tracer(APP_SCOPE)


@dataclass
class Tally:
    """What the app did, counted as it happened, so the demo's summary can explain the store's numbers."""

    operations: Counter[str] = field(default_factory=Counter[str])  # per feature
    api_calls: int = 0
    failed_calls: int = 0  # the overloaded primary model's 503s; each is followed by a fallback call
    app_spans: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "operations": dict(self.operations),
            "api_calls": self.api_calls,
            "failed_calls": self.failed_calls,
            "app_spans": self.app_spans,
            "fallback": list(LEAD_MODELS),
        }


class Contact(BaseModel):
    name: str
    email: str
    company: str


def score_lead(client: openai.OpenAI, lead: str, tally: Tally) -> str:
    tally.app_spans += 1
    with tracer.start_as_current_span("score_lead"), fallbacks():
        for model in LEAD_MODELS:
            tally.api_calls += 1
            try:
                reply = client.chat.completions.create(
                    model=model,
                    messages=[
                        {
                            "role": "system",
                            "content": "You score B2B leads from 0 to 100 and explain briefly.",
                        },
                        {"role": "user", "content": f"Score this lead: {lead}, 250 employees, Series B."},
                    ],
                )
                return reply.choices[0].message.content or ""
            except openai.APIStatusError:
                tally.failed_calls += 1
                continue
    return "unscored"


def extract_contact(client: openai.OpenAI, signature: str) -> Contact | None:
    completion = client.chat.completions.parse(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": f"Extract the contact from this email signature:\n{signature}"}
        ],
        response_format=Contact,
    )
    return completion.choices[0].message.parsed


def support_chat(client: openai.OpenAI, question: str) -> str:
    parts: list[str] = []
    for chunk in client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": question}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


def index_documents(client: openai.OpenAI, docs: list[str]) -> int:
    result = client.embeddings.create(model="text-embedding-3-small", input=docs)
    return len(result.data)


def summarize(client: openai.OpenAI, notes: str) -> str:
    return client.responses.create(model="gpt-4.1-mini", input=f"Summarize: {notes}").output_text


def main(summary_path: Path | None = None) -> int:
    """Run every tenant's operations once; with ``summary_path``, write the :class:`Tally` there as JSON."""
    client = openai.OpenAI(max_retries=0)
    tally = Tally()

    def one_call(feature: str) -> None:
        tally.operations[feature] += 1
        tally.api_calls += 1

    for tenant, users in TENANTS.items():
        for index, user in enumerate(users):
            with attribution(tenant_id=tenant, user_id=user, session_id=f"{tenant}-session-{index}"):
                with attribution(feature="lead_scoring"):
                    for lead in LEADS[: 2 + index]:
                        score_lead(client, f"{lead} for {tenant}", tally)
                        tally.operations["lead_scoring"] += 1
                with attribution(feature="contact_extraction"):
                    extract_contact(client, f"{user}\nSales Lead, {tenant.title()} Inc.")
                    one_call("contact_extraction")
                with attribution(feature="support_chat", conversation_id=f"conv-{tenant}-{index}"):
                    for turn in range(2):
                        support_chat(client, f"My {tenant} integration stopped syncing (turn {turn}).")
                        one_call("support_chat")
                with attribution(feature="search_index"):
                    index_documents(client, [f"{tenant} doc {i}: quarterly report notes" for i in range(4)])
                    one_call("search_index")
                with attribution(feature="summaries"):
                    summarize(client, f"Call notes for {user}: discussed renewal and pricing tiers.")
                    one_call("summaries")
    operations = sum(tally.operations.values())
    print(
        f"sample app finished: {operations} operations for {len(TENANTS)} tenants, {tally.api_calls} API calls "
        f"({tally.failed_calls} failed and were retried on a fallback model)",
        file=sys.stderr,
    )
    if summary_path is not None:
        summary_path.write_text(json.dumps(tally.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
