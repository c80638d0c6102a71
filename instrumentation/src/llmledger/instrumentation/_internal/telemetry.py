"""What lives as long as one ``instrument()``: tracer, metrics, prices, settings; wrappers close over it."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from llmledger.instrumentation._internal.attribution import AutoFallbackTracker
from llmledger.instrumentation._internal.config import InstrumentationConfig
from llmledger.instrumentation._internal.metrics import CallMetrics
from llmledger.instrumentation._internal.usage import TokenUsage

if TYPE_CHECKING:
    from llmledger.instrumentation._internal.pricing import CallCost


class Pricer(Protocol):
    """What prices a call: :class:`~llmledger.instrumentation.pricing.PriceBook`, or a test's stand-in."""

    def price_call(
        self,
        provider: str,
        model: str,
        usage: TokenUsage,
        *,
        service_tier: str | None = None,
        at: datetime | None = None,
    ) -> CallCost | None: ...


class BackgroundResponses:
    """Ids of background responses created here and not billed yet (bounded)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._pending: OrderedDict[str, tuple[Any, dict[str, str]]] = OrderedDict()
        self._limit = limit

    def remember(self, response_id: str, model: Any, attribution: dict[str, str]) -> None:
        self._pending[response_id] = (model, attribution)
        while len(self._pending) > self._limit:
            self._pending.popitem(last=False)

    def pending(self, response_id: Any) -> tuple[Any, dict[str, str]] | None:
        return self._pending.get(response_id) if isinstance(response_id, str) else None

    def done(self, response_id: str) -> None:
        self._pending.pop(response_id, None)


class Telemetry:
    """Everything one ``instrument()`` call set up."""

    def __init__(
        self,
        tracer: Tracer,
        meter: Meter,
        config: InstrumentationConfig,
        pricer: Pricer | None,
        resource_tenant: str | None,
    ) -> None:
        self.tracer = tracer
        self.config = config
        self.pricer = pricer
        self.resource_tenant = resource_tenant
        self.active = True
        self.background = BackgroundResponses()
        self.auto_fallbacks = AutoFallbackTracker()
        self.metrics = CallMetrics(meter, tenant=config.metrics_tenant)
