"""A demo-like month of LLM calls with known answers, written through the product's span path.

Every call becomes a real OpenTelemetry SDK span (a CLIENT span under the request's SERVER
span) and is written by :class:`SpanWriter` into ``otel_traces``; the materialized views
fill ``llm_calls`` and ``llm_usage_hourly`` as they do in production. The expected answers
are computed here, in Python, from the same :class:`SeedCall` list and the prices in
:data:`PRICES`, never read back from the store.

What the data holds on purpose:

- three tenants (and unattributed calls), several users, features and conversations;
- reported costs (``gen_ai.usage.cost``), costs the store prices from ``model_prices``
  (``mistral-small``), and unpriced calls (``llama-3.1-70b``);
- cached input on a model with a cached price (``gpt-4o-2024-08-06`` priced as ``gpt-4o``)
  and on one without a price row (``gpt-4o-mini``);
- estimated-token calls, streams with a time to first chunk, errors of two types;
- fallbacks: ``gpt-4o`` rate-limited -> ``gpt-4o-mini``; that timing out -> ``mistral-small``;
- a globex burst on 2026-11-12 14:00 (its daily budget's only breach);
- an error burst on ``gpt-4o-mini`` in the last 15 minutes (the error-spike alert).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

from clickhouse_connect.driver.client import Client
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from llmledger.exporter._internal.rows import SpanRows
from llmledger.exporter._internal.store import run_command
from llmledger.exporter._internal.stringify import go_float
from llmledger.exporter._internal.writer import SpanWriter

MONTH_START: Final = datetime(2026, 11, 1, tzinfo=UTC)
# The dashboards' default view in the tests: one week, ending a second before midnight so
# the hour after it is not part of the range (Grafana's "to" is inclusive).
RANGE_START: Final = datetime(2026, 11, 9, tzinfo=UTC)
RANGE_END: Final = datetime(2026, 11, 15, 23, 59, 59, tzinfo=UTC)
SEED_END: Final = datetime(2026, 11, 16, tzinfo=UTC)
# The alert window: the last 15 minutes of the seeded data.
ALERT_START: Final = datetime(2026, 11, 15, 23, 45, tzinfo=UTC)
GLOBEX_BURST: Final = datetime(2026, 11, 12, 14, tzinfo=UTC)

# (provider as model_prices spells it, model) -> (input, cached input or None, output) USD/Mtok
PRICES: Final[dict[tuple[str, str], tuple[Decimal, Decimal | None, Decimal]]] = {
    ("openai", "gpt-4o"): (Decimal("2.5"), Decimal("1.25"), Decimal("10")),
    ("mistral_ai", "mistral-small"): (Decimal("0.1"), None, Decimal("0.3")),
}

TENANT_USERS: Final = {
    "acme": ("alice", "bob"),
    "globex": ("carol", "dan"),
    "initech": ("erin",),
    "": ("",),
}
FEATURES: Final = ("lead_scoring", "contact_extraction", "summarize")


@dataclass(frozen=True, slots=True)
class SeedCall:
    """One LLM call as the instrumentation would report it."""

    at: datetime
    trace_id: int
    tenant: str
    user: str
    feature: str
    conversation: str
    provider: str
    model: str
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None
    estimated: bool = False
    error: str | None = None
    fallback_attempt: int = 0
    fallback_from_model: str = ""
    fallback_from_error: str = ""
    duration_ms: int = 800
    ttft_ms: int | None = None
    operation: str = "chat"

    @property
    def hour(self) -> datetime:
        return self.at.replace(minute=0, second=0, microsecond=0)

    @property
    def success(self) -> bool:
        return self.error is None

    @property
    def unpriced(self) -> bool:
        """Counted in the rollup's unpriced_calls: a successful call without a known cost."""
        return self.success and self.expected_cost is None

    @property
    def expected_cost(self) -> Decimal | None:
        """What llm_calls.cost_usd must hold: the reported cost, a model_prices price, or unknown."""
        if self.cost is not None:
            return Decimal(go_float(self.cost))
        price = PRICES.get((self.provider, self.model))
        if price is None or (self.input_tokens is None and self.output_tokens is None):
            return None
        input_price, cached_price, output_price = price
        tokens_in = self.input_tokens or 0
        cached = min(self.cached_tokens, tokens_in)
        return (
            (tokens_in - cached) * input_price
            + cached * (cached_price if cached_price is not None else input_price)
            + (self.output_tokens or 0) * output_price
        ) / Decimal(1_000_000)


@dataclass
class SeedData:
    """The calls and the budgets seeded into one database."""

    calls: list[SeedCall] = field(default_factory=list[SeedCall])
    budgets: list[tuple[str, str, str, Decimal, str]] = field(default_factory=list)

    def select(self, predicate: Callable[[SeedCall], bool]) -> list[SeedCall]:
        return [call for call in self.calls if predicate(call)]


def cost_sum(calls: Iterable[SeedCall]) -> Decimal:
    """Spend as the dashboards sum it: unknown costs count as nothing."""
    return sum((c.expected_cost or Decimal(0) for c in calls), Decimal(0))


def in_rollup_range(call: SeedCall, start: datetime, end: datetime) -> bool:
    """The rollup's view of a time range: the call's hour starts inside it (both ends inclusive)."""
    return start <= call.hour <= end


def in_calls_range(call: SeedCall, start: datetime, end: datetime) -> bool:
    """llm_calls' view: the call's own timestamp lies in the range (both ends inclusive)."""
    return start <= call.at <= end


# -- generating the calls --------------------------------------------------------------------------------


def _normal_call(rng: random.Random, at: datetime, trace_id: int) -> SeedCall:
    tenant = rng.choices(["acme", "globex", "initech", ""], weights=[5, 3, 2, 1])[0]
    user = rng.choice(TENANT_USERS[tenant])
    feature = rng.choice(FEATURES)
    conversation = f"{tenant or 'anon'}-conv-{rng.randint(1, 12)}" if rng.random() < 0.7 else ""
    choice = rng.random()
    input_tokens = rng.randint(200, 20_000)
    output_tokens = rng.randint(20, 2_000)
    error = rng.choice(["RateLimitError", "APITimeoutError"]) if rng.random() < 0.03 else None
    cached = reasoning = 0
    cost: float | None = None
    ttft: int | None = None
    if choice < 0.35:
        model, provider = "gpt-4o-2024-08-06", "openai"
        cached = rng.choice([0, 0, input_tokens // 2])
        cost = round(rng.uniform(0.002, 0.08), 6)
        duration, ttft = rng.randint(900, 2_900), rng.randint(200, 599)
    elif choice < 0.70:
        model, provider = "gpt-4o-mini", "openai"
        cached = rng.choice([0, input_tokens // 4])
        reasoning = rng.choice([0, output_tokens // 3])
        cost = round(rng.uniform(0.0001, 0.004), 6)
        duration, ttft = rng.randint(300, 1_299), rng.randint(100, 299)
    elif choice < 0.85:
        model, provider = "mistral-small", "mistral_ai"  # priced by the store from model_prices
        duration = rng.randint(400, 999)
    else:
        model, provider = "llama-3.1-70b", "groq"  # no price anywhere: unpriced
        duration = rng.randint(200, 699)
    estimated = provider == "groq" and rng.random() < 0.5
    stream = ttft is not None and rng.random() < 0.5
    failed = error is not None
    return SeedCall(
        at=at,
        trace_id=trace_id,
        tenant=tenant,
        user=user,
        feature=feature,
        conversation=conversation,
        provider=provider,
        model=model,
        input_tokens=None if failed else input_tokens,
        output_tokens=None if failed else output_tokens,
        cached_tokens=0 if failed else cached,
        reasoning_tokens=0 if failed else reasoning,
        cost=None if failed else cost,
        estimated=estimated and not failed,
        error=error,
        duration_ms=duration,
        ttft_ms=ttft if stream and not failed else None,
    )


def _fallback_chain(rng: random.Random, at: datetime, trace_id: int) -> list[SeedCall]:
    tenant = rng.choice(["acme", "globex"])
    user = rng.choice(TENANT_USERS[tenant])
    base = SeedCall(
        at=at,
        trace_id=trace_id,
        tenant=tenant,
        user=user,
        feature="lead_scoring",
        conversation="",
        provider="openai",
        model="gpt-4o-2024-08-06",
        input_tokens=None,
        output_tokens=None,
    )
    first = replace(base, error="RateLimitError", duration_ms=150)
    second_fails = rng.random() < 0.25
    second_at = at + timedelta(milliseconds=200)
    if second_fails:
        second = replace(
            base,
            at=second_at,
            model="gpt-4o-mini",
            error="APITimeoutError",
            fallback_attempt=1,
            fallback_from_model=first.model,
            fallback_from_error="RateLimitError",
            duration_ms=30_000,
        )
        third = replace(
            base,
            at=second_at + timedelta(seconds=31),
            provider="mistral_ai",
            model="mistral-small",
            input_tokens=3_000,
            output_tokens=400,
            fallback_attempt=2,
            fallback_from_model="gpt-4o-mini",
            fallback_from_error="APITimeoutError",
            duration_ms=700,
        )
        return [first, second, third]
    second = replace(
        base,
        at=second_at,
        model="gpt-4o-mini",
        input_tokens=3_000,
        output_tokens=400,
        cost=0.00069,
        fallback_attempt=1,
        fallback_from_model=first.model,
        fallback_from_error="RateLimitError",
        duration_ms=900,
    )
    return [first, second]


def generate(seed: int = 2026_11) -> list[SeedCall]:
    """The month so far (2026-11-01 .. 2026-11-15), deterministic."""
    rng = random.Random(seed)
    calls: list[SeedCall] = []
    trace_id = 0x1000
    hour = MONTH_START
    while hour < SEED_END - timedelta(hours=1):
        # Busier on weekdays and in working hours.
        busy = 9 <= hour.hour < 18 and hour.weekday() < 5
        for _ in range(rng.randint(4, 8) if busy else rng.randint(0, 3)):
            trace_id += 1
            at = hour + timedelta(seconds=rng.randint(0, 3_500), milliseconds=rng.randint(0, 999))
            if rng.random() < 0.06:
                calls.extend(_fallback_chain(rng, at, trace_id))
            else:
                calls.append(_normal_call(rng, at, trace_id))
        hour += timedelta(hours=1)
    # The globex burst: expensive calls in one hour.
    for i in range(6):
        trace_id += 1
        calls.append(
            SeedCall(
                at=GLOBEX_BURST + timedelta(minutes=5 * i),
                trace_id=trace_id,
                tenant="globex",
                user="carol",
                feature="summarize",
                conversation="globex-burst",
                provider="openai",
                model="gpt-4o-2024-08-06",
                input_tokens=120_000,
                output_tokens=4_000,
                cost=0.5,
                duration_ms=9_000,
            )
        )
    # The last 15 minutes: gpt-4o-mini fails 12 times in 30, gpt-4o-2024-08-06 not at all.
    for i in range(30):
        for model, failing in (("gpt-4o-mini", i % 5 < 2), ("gpt-4o-2024-08-06", False)):
            trace_id += 1
            calls.append(
                SeedCall(
                    at=ALERT_START + timedelta(seconds=20 * i, milliseconds=7),
                    trace_id=trace_id,
                    tenant="initech",
                    user="erin",
                    feature="summarize",
                    conversation="",
                    provider="openai",
                    model=model,
                    input_tokens=None if failing else 1_000,
                    output_tokens=None if failing else 100,
                    cost=None if failing else 0.001,
                    error="InternalServerError" if failing else None,
                    duration_ms=500,
                )
            )
    calls.sort(key=lambda c: c.at)
    return calls


def budgets_for(calls: list[SeedCall]) -> list[tuple[str, str, str, Decimal, str]]:
    """Budgets whose outcome as of RANGE_END is fixed by the data.

    acme monthly: breached (limit = half its month-to-date spend); acme/bob monthly: ok
    (10x); globex daily: above every normal day, below the burst day, so only 2026-11-12
    breaches; initech monthly: at 85 % (warning); globex monthly: ok.
    """

    def month_spend(tenant: str, user: str | None = None) -> Decimal:
        return cost_sum(
            c
            for c in calls
            if c.tenant == tenant
            and (user is None or c.user == user)
            and in_rollup_range(c, MONTH_START, RANGE_END)
        )

    daily: dict[datetime, Decimal] = {}
    for c in calls:
        if c.tenant == "globex":
            day = c.at.replace(hour=0, minute=0, second=0, microsecond=0)
            daily[day] = daily.get(day, Decimal(0)) + (c.expected_cost or Decimal(0))
    burst_day = GLOBEX_BURST.replace(hour=0)
    normal_max = max(v for d, v in daily.items() if d != burst_day)
    globex_daily = (normal_max + daily[burst_day]) / 2
    assert normal_max < globex_daily < daily[burst_day]
    return [
        ("acme", "", "monthly", (month_spend("acme") / 2).quantize(Decimal("0.01")), "soft"),
        ("acme", "bob", "monthly", (month_spend("acme", "bob") * 10).quantize(Decimal("0.01")), "hard"),
        ("globex", "", "daily", globex_daily.quantize(Decimal("0.0001")), "soft"),
        ("globex", "", "monthly", (month_spend("globex") * 10).quantize(Decimal("0.01")), "soft"),
        (
            "initech",
            "",
            "monthly",
            (month_spend("initech") / Decimal("0.85")).quantize(Decimal("0.0001")),
            "soft",
        ),
    ]


# -- writing ---------------------------------------------------------------------------------------------------


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def _attributes(call: SeedCall) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": call.operation,
        "gen_ai.provider.name": call.provider,
        "gen_ai.request.model": call.model,
        "llmledger.feature": call.feature,
    }
    if call.success:
        attributes["gen_ai.response.model"] = call.model
    if call.tenant:
        attributes["tenant.id"] = call.tenant
    if call.user:
        attributes["user.id"] = call.user
    if call.conversation:
        attributes["gen_ai.conversation.id"] = call.conversation
    if call.input_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = call.input_tokens
        attributes["gen_ai.usage.cache_read.input_tokens"] = call.cached_tokens
    if call.output_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = call.output_tokens
        attributes["gen_ai.usage.reasoning.output_tokens"] = call.reasoning_tokens
    if call.cost is not None:
        attributes["gen_ai.usage.cost"] = call.cost
        attributes["llmledger.cost.source"] = "price_table"
    if call.estimated:
        attributes["llmledger.usage.estimated"] = True
    if call.ttft_ms is not None:
        attributes["gen_ai.request.stream"] = True
        attributes["gen_ai.response.time_to_first_chunk"] = call.ttft_ms / 1000
    if call.fallback_attempt:
        attributes["llmledger.fallback"] = True
        attributes["llmledger.fallback.attempt"] = call.fallback_attempt
        attributes["llmledger.fallback.from_model"] = call.fallback_from_model
        attributes["llmledger.fallback.from_error"] = call.fallback_from_error
    if call.error is not None:
        attributes["error.type"] = call.error
    return attributes


class _TraceIds(IdGenerator):
    """Deterministic ids: the seed's trace numbers, span ids counted up."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        self.span_id += 1
        return self.span_id

    def is_trace_id_random(self) -> bool:
        return False


def spans_for(calls: list[SeedCall]) -> list[ReadableSpan]:
    """One SERVER span per trace (the app's request) with its calls as CLIENT children."""
    memory = InMemorySpanExporter()
    ids = _TraceIds()
    provider = TracerProvider(resource=Resource.create({"service.name": "crm-app"}), id_generator=ids)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("llmledger.instrumentation.openai", "0.1.0")
    by_trace: dict[int, list[SeedCall]] = {}
    for call in calls:
        by_trace.setdefault(call.trace_id, []).append(call)
    for trace_id, trace_calls in by_trace.items():
        ids.trace_id = trace_id
        first = trace_calls[0].at
        last = max(c.at + timedelta(milliseconds=c.duration_ms) for c in trace_calls)
        root = tracer.start_span("POST /api/crm", kind=SpanKind.SERVER, start_time=_ns(first))
        context = trace.set_span_in_context(root)
        for call in trace_calls:
            span = tracer.start_span(
                f"{call.operation} {call.model}",
                context=context,
                kind=SpanKind.CLIENT,
                attributes=_attributes(call),
                start_time=_ns(call.at),
            )
            if call.error is not None:
                span.set_status(Status(StatusCode.ERROR, call.error))
            span.end(end_time=_ns(call.at) + call.duration_ms * 1_000_000)
        root.end(end_time=_ns(last) + 1_000_000)
    provider.shutdown()
    return list(memory.get_finished_spans())


def write_prices(client: Client, database: str) -> None:
    """:data:`PRICES` as the store's price book (one flat price per model)."""
    for (provider, model), (input_price, cached_price, output_price) in PRICES.items():
        run_command(
            client,
            f"INSERT INTO `{database}`.model_prices (synced_at, provider, model, lookup, service_tier, "
            "day_from, day_until, input_tokens_above, input_tokens_up_to, input_per_mtok, cached_input_per_mtok, "
            "cache_write_per_mtok, output_per_mtok, reasoning_per_mtok, per_call_usd, source) VALUES "
            "('2026-11-01 00:00:00', {p:String}, {m:String}, 'name', '', 0, 86400, 0, 18446744073709551615, "
            "{i:Decimal(38, 18)}, "
            "{c:Decimal(38, 18)}, {i:Decimal(38, 18)}, {o:Decimal(38, 18)}, {o:Decimal(38, 18)}, 0, 'custom')",
            parameters={
                "p": provider,
                "m": model,
                "i": input_price,
                "c": cached_price if cached_price is not None else input_price,
                "o": output_price,
            },
        )


def write_budgets(client: Client, database: str, budgets: list[tuple[str, str, str, Decimal, str]]) -> None:
    # An older acme row first: the newest row per (tenant, user, period) is the budget.
    rows = [("acme", "", "monthly", Decimal("1000000"), "hard", "2026-10-01 00:00:00.000")]
    rows += [(*b, "2026-11-01 00:00:00.000") for b in budgets]
    for tenant, user, period, limit, enforcement, updated in rows:
        run_command(
            client,
            f"INSERT INTO `{database}`.budgets VALUES ({{t:String}}, {{u:String}}, {{p:String}}, "
            "{l:Decimal(38, 12)}, {e:String}, {at:String})",
            parameters={"t": tenant, "u": user, "p": period, "l": limit, "e": enforcement, "at": updated},
        )


def _batches(spans: list[ReadableSpan], size: int) -> Iterator[list[ReadableSpan]]:
    for start in range(0, len(spans), size):
        yield spans[start : start + size]


def seed(client: Client, database: str) -> SeedData:
    """Write prices, then every call as spans, then budgets; return what was written."""
    write_prices(client, database)
    calls = generate()
    writer = SpanWriter(client, database)
    for batch in _batches(spans_for(calls), 2_000):
        rows = SpanRows()
        rows.add_sdk_spans(batch)
        writer.write(rows)
    budgets = budgets_for(calls)
    write_budgets(client, database, budgets)
    return SeedData(calls=calls, budgets=budgets)
