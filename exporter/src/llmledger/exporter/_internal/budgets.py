"""Budgets: spend limits per tenant (or per user of a tenant) per day or month, and where spend stands.

``llmledger budget`` sets, lists, removes and checks them; :class:`BudgetGuard` brings the
hard ones into the app process (opt-in), refreshed in the background.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from importlib import resources
from string import Template

from clickhouse_connect.driver.client import Client

from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.errors import OUTSIDE_FAILURES, contain
from llmledger.exporter._internal.identifiers import quote_identifier
from llmledger.exporter._internal.store import (
    StoreError,
    open_store,
    read_only_settings,
    run_command,
    run_query,
)

__all__ = [
    "PERIODS",
    "BudgetExceededError",
    "BudgetGuard",
    "BudgetStatus",
    "budget_status",
    "parse_limit",
    "remove_budget",
    "set_budget",
]

PERIODS = ("daily", "monthly")
ENFORCEMENTS = ("soft", "hard")
_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    tenant_id: str
    user_id: str  # "" for a whole-tenant budget
    period: str
    enforcement: str
    limit_usd: Decimal
    period_start: datetime
    spent_usd: Decimal

    @property
    def share(self) -> Decimal:
        return self.spent_usd / self.limit_usd if self.limit_usd > 0 else Decimal("Infinity")

    @property
    def breached(self) -> bool:
        return self.spent_usd >= self.limit_usd

    def state(self, warn_at: Decimal) -> str:
        if self.breached:
            return "BREACHED"
        return "near" if self.share >= warn_at else "ok"


def parse_limit(text: str) -> Decimal:
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount in USD (e.g. 250 or 19.99)") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"a budget must be a positive amount, got {text!r}")
    if value.as_tuple().exponent < -12:  # pyright: ignore[reportOperatorIssue]
        raise ValueError(f"{text!r} has more than 12 decimal places")
    return value


def _budgets_table(database: str) -> str:
    return f"{quote_identifier(database, 'database name')}.budgets"


def set_budget(
    client: Client,
    database: str,
    *,
    tenant: str,
    user: str = "",
    period: str,
    limit: Decimal,
    enforcement: str,
) -> None:
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    if enforcement not in ENFORCEMENTS:
        raise ValueError(f"enforcement must be one of {', '.join(ENFORCEMENTS)}")
    if not tenant:
        raise ValueError("a budget needs a tenant")
    run_command(
        client,
        f"INSERT INTO {_budgets_table(database)} (tenant_id, user_id, period, limit_usd, enforcement, updated_at) "
        "VALUES ({tenant:String}, {user:String}, {period:String}, {limit:Decimal(38, 12)}, {enforcement:String}, now64(3))",
        parameters={
            "tenant": tenant,
            "user": user,
            "period": period,
            "limit": str(limit),
            "enforcement": enforcement,
        },
    )


def remove_budget(client: Client, database: str, *, tenant: str, user: str = "", period: str) -> int:
    """Remove one budget; returns how many there were (0 or 1)."""
    found = run_query(
        client,
        f"SELECT count() FROM {_budgets_table(database)} FINAL "
        "WHERE tenant_id = {tenant:String} AND user_id = {user:String} AND period = {period:String}",
        parameters={"tenant": tenant, "user": user, "period": period},
    ).result_rows[0][0]
    if found:
        run_command(
            client,
            f"ALTER TABLE {_budgets_table(database)} DELETE "
            "WHERE tenant_id = {tenant:String} AND user_id = {user:String} AND period = {period:String}",
            parameters={"tenant": tenant, "user": user, "period": period},
            settings={"mutations_sync": 2},
        )
    return int(found)


def budget_status(client: Client, database: str, now: datetime | None = None) -> list[BudgetStatus]:
    sql = Template(
        resources.files("llmledger.exporter._internal").joinpath("queries", "budget_status.sql").read_text()
    ).substitute(db=quote_identifier(database, "database name"))
    when = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None, microsecond=0)
    result = run_query(client, sql, parameters={"now": when}, settings=read_only_settings(client))
    out: list[BudgetStatus] = []
    for tenant, user, period, enforcement, limit, start, spent in result.result_rows:
        out.append(
            BudgetStatus(
                str(tenant),
                str(user),
                str(period),
                str(enforcement),
                Decimal(limit),
                start,
                Decimal(spent or 0),
            )
        )
    return out


class BudgetExceededError(RuntimeError):
    """Raised before an LLM call when the tenant (or user) is over a hard budget (opt-in, see BudgetGuard)."""

    def __init__(self, status: BudgetStatus) -> None:
        self.status = status
        who = f"tenant {status.tenant_id!r}" + (f" user {status.user_id!r}" if status.user_id else "")
        super().__init__(
            f"{who} is over its hard {status.period} budget: spent ${status.spent_usd.normalize():f} of "
            f"${status.limit_usd.normalize():f} since {status.period_start:%Y-%m-%d %H:%M} UTC"
        )


class BudgetGuard:
    """Refuses LLM calls for tenants over a hard budget, from a spend figure refreshed in the background.

    ``fetch`` returns the current budget statuses (normally :func:`budget_status` on a store
    client); it runs every ``refresh_s`` seconds in one daemon thread, never per call. If a
    refresh fails the last known figures stay in force (and a warning is logged once).
    """

    def __init__(self, fetch: Callable[[], list[BudgetStatus]], refresh_s: float = 30.0) -> None:
        self._fetch = fetch
        self._refresh_s = refresh_s
        self._over: Mapping[tuple[str, str], BudgetStatus] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    @classmethod
    def from_store(cls, config: StoreConfig | None = None, refresh_s: float = 30.0) -> BudgetGuard:
        """A guard reading the configured store (``LLMLEDGER_CLICKHOUSE_URL``).

        A ClickHouse server is read directly. An embedded store is read through the
        collector that owns it (its ClickHouse HTTP interface, as the read-only user), never
        opened in the app's process; until a collector serves it, refreshes fail and the
        guard lets calls through (logged once), as with any store that is down.
        """
        config = config or StoreConfig.from_env()
        clients: list[Client] = []

        def fetch() -> list[BudgetStatus]:
            if not clients:
                clients.append(open_store(config, in_process=False))
            try:
                return budget_status(clients[0], config.database)
            except Exception:
                clients.pop().close()  # the collector may have restarted: reconnect next time
                raise

        return cls(fetch, refresh_s)

    def install(self) -> Callable[[], None]:
        """Start refreshing and check every instrumented LLM call; returns a function that undoes both."""
        from llmledger.instrumentation import add_call_guard

        self.start()
        remove = add_call_guard(self.check)

        def uninstall() -> None:
            remove()
            self.stop()

        return uninstall

    def refresh(self) -> None:
        try:
            statuses = self._fetch()
        except Exception as exc:
            contain("the budget guard refreshing its figures", exc, (*OUTSIDE_FAILURES, StoreError))
            if not self._failing:
                _logger.warning(
                    "llmledger: budget figures could not be refreshed (keeping the last ones): %s", exc
                )
            self._failing = True
            return
        self._failing = False
        self._over = {(s.tenant_id, s.user_id): s for s in statuses if s.enforcement == "hard" and s.breached}

    def start(self) -> BudgetGuard:
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="llmledger-budget-guard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self.refresh()

    def check(self, attribution: Mapping[str, str]) -> None:
        """Raise :class:`BudgetExceededError` if this call's tenant or user is over a hard budget."""
        over = self._over
        if not over:
            return
        tenant = attribution.get("tenant.id")
        if tenant is None:
            return
        status = over.get((tenant, "")) or over.get((tenant, attribution.get("user.id", "")))
        if status is not None:
            raise BudgetExceededError(status)
