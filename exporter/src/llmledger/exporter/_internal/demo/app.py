"""The demo's sample app: a small multi-tenant SaaS backend calling OpenAI, run under
``opentelemetry-instrument`` exactly as a user's app would be.

Three tenants, several users and features; a lead-scoring flow that falls back to a
smaller model when the primary is overloaded; a streamed support chat; structured
extraction with ``parse``; embeddings for search; summaries on the Responses API.
Everything is billed through :func:`llmledger.instrumentation.attribution`.
"""

from __future__ import annotations

import sys

import openai
from opentelemetry import trace
from pydantic import BaseModel

from llmledger.instrumentation import attribution, fallbacks

TENANTS: dict[str, list[str]] = {
    "acme": ["alice@acme.io", "bob@acme.io", "carol@acme.io"],
    "globex": ["hank@globex.com", "marge@globex.com"],
    "initech": ["peter@initech.com"],
}
LEADS = ["Northwind Traders", "Contoso Ltd", "Fabrikam", "Tailspin Toys", "Wingtip", "Litware"]

tracer = trace.get_tracer("llmledger.demo.app")


class Contact(BaseModel):
    name: str
    email: str
    company: str


def score_lead(client: openai.OpenAI, lead: str) -> str:
    with tracer.start_as_current_span("score_lead"), fallbacks():
        for model in ("gpt-4.1", "gpt-4.1-mini"):
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


def main() -> int:
    client = openai.OpenAI(max_retries=0)
    calls = 0
    for tenant, users in TENANTS.items():
        for index, user in enumerate(users):
            with attribution(tenant_id=tenant, user_id=user, session_id=f"{tenant}-session-{index}"):
                with attribution(feature="lead_scoring"):
                    for lead in LEADS[: 2 + index]:
                        score_lead(client, f"{lead} for {tenant}")
                        calls += 1
                with attribution(feature="contact_extraction"):
                    extract_contact(client, f"{user}\nSales Lead, {tenant.title()} Inc.")
                    calls += 1
                with attribution(feature="support_chat", conversation_id=f"conv-{tenant}-{index}"):
                    for turn in range(2):
                        support_chat(client, f"My {tenant} integration stopped syncing (turn {turn}).")
                        calls += 1
                with attribution(feature="search_index"):
                    index_documents(client, [f"{tenant} doc {i}: quarterly report notes" for i in range(4)])
                    calls += 1
                with attribution(feature="summaries"):
                    summarize(client, f"Call notes for {user}: discussed renewal and pricing tiers.")
                    calls += 1
    print(f"sample app finished: {calls} operations for {len(TENANTS)} tenants", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
