"""Read-only ClickHouse access for one tenant: a user whose queries see only that tenant's rows.

For per-tenant Grafana organisations on a shared server. Every table holding tenant data
gets a RESTRICTIVE row policy for the user (``tenant_id = '<tenant>'``; on ``otel_traces``
the span's or resource's ``tenant.id``), plus one permissive ``USING 1`` policy for
everyone else, because in ClickHouse a table with any row policy hides all rows from
users no permissive policy covers. ``otel_traces_trace_id_ts`` carries no tenant, so it
is not granted; ``model_prices`` holds no tenant data and is granted whole.

The user is ``readonly = 2``: it cannot write or change grants but may set query
settings, which Grafana's ClickHouse data source does on every query.
"""

from __future__ import annotations

from typing import Final

from clickhouse_connect.driver.binding import format_str

from llmledger.exporter._internal.identifiers import quote_identifier

__all__ = ["TENANT_TABLES", "tenant_access_statements"]

# Table -> the condition selecting one tenant's rows ({tenant} is a quoted literal).
TENANT_TABLES: Final[dict[str, str]] = {
    # llm_calls is a view of llm_call_rows (migration 0012): the policy sits on the table,
    # and the view, which runs with its reader's rights, shows the reader's rows only.
    "llm_call_rows": "tenant_id = {tenant}",
    "llm_usage_hourly": "tenant_id = {tenant}",
    "llm_usage_daily": "tenant_id = {tenant}",
    "llm_fallbacks": "tenant_id = {tenant}",
    "budgets": "tenant_id = {tenant}",
    # The same tenant llm_calls derives: the span's, OpenLLMetry's, else the resource's.
    "otel_traces": "coalesce(nullIf(SpanAttributes['tenant.id'], ''), "
    "nullIf(SpanAttributes['traceloop.association.properties.tenant_id'], ''), "
    "ResourceAttributes['tenant.id']) = {tenant}",
}
_SHARED_TABLES: Final = ("model_prices",)
_VIEWS: Final = ("llm_calls",)


def tenant_access_statements(
    database: str, tenant: str, user: str, password: str, cluster: str | None = None
) -> list[str]:
    """The statements creating (or updating) ``user`` with read access to ``tenant``'s rows only."""
    db = quote_identifier(database, "database name")
    who = quote_identifier(user, "user name")
    on_cluster = f" ON CLUSTER {quote_identifier(cluster, 'cluster name')}" if cluster is not None else ""
    if not tenant:
        raise ValueError("tenant must not be empty")
    literal = format_str(tenant)
    identified = f"IDENTIFIED WITH sha256_password BY {format_str(password)} SETTINGS readonly = 2"
    policy = quote_identifier(f"llmledger_tenant_{user}", "row policy name")
    statements = [
        f"CREATE USER IF NOT EXISTS {who}{on_cluster} {identified}",
        f"ALTER USER {who}{on_cluster} {identified}",
        f"REVOKE{on_cluster} ALL ON *.* FROM {who}",
    ]
    for table, condition in TENANT_TABLES.items():
        target = f"{db}.{quote_identifier(table, 'table name')}"
        statements += [
            f"CREATE ROW POLICY IF NOT EXISTS llmledger_all_rows{on_cluster} ON {target} "
            "AS PERMISSIVE USING 1 TO ALL",
            f"CREATE ROW POLICY OR REPLACE {policy}{on_cluster} ON {target} "
            f"AS RESTRICTIVE USING {condition.format(tenant=literal)} TO {who}",
            f"GRANT{on_cluster} SELECT ON {target} TO {who}",
        ]
    statements += [
        f"GRANT{on_cluster} SELECT ON {db}.{quote_identifier(t, 'table name')} TO {who}"
        for t in (*_SHARED_TABLES, *_VIEWS)
    ]
    return statements
