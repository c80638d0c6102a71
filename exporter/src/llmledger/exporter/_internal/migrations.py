"""Versioned, idempotent schema migrations kept as ``.sql`` files in ``schema/``.

Each file ``NNNN_name.sql`` holds one or more statements separated by ``;`` at a line end.
Only identifiers and fixed clauses are substituted into them (database, ``ON CLUSTER``,
engine names, TTL clauses, the deduplication-window setting), each validated or built
here from validated numbers; values never are. A ledger table records what was applied,
so applying twice changes nothing, and a later migration applies over an earlier one
with the data kept.

The storage contract is written once: ``schema/views/NAME.sql`` holds the one current
definition of each materialized view's SELECT, reached from a migration as
``${view_NAME}`` (to create the view, and to backfill with exactly what the view would
have written); ``schema/expressions/NAME.sql`` holds SQL expressions several views share
(the tenant, the provider, the price lookup), reached as ``${NAME}``. The provider maps are
llmledger's own data (:mod:`llmledger.instrumentation.pricing`), rendered as string-array
literals of validated names. Migrations up to 0008 predate this and keep their text, so
that a store's recorded checksums stay true.
"""

from __future__ import annotations

import hashlib
import re
import string
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Final

from clickhouse_connect.driver.client import Client

from llmledger.exporter._internal.attribute_names import render_attribute_names
from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.identifiers import quote_identifier
from llmledger.exporter._internal.store import run_command, run_query
from llmledger.instrumentation.pricing import PROVIDER_ALIASES, PROVIDER_IDS

__all__ = [
    "EMBEDDED_ONLY",
    "LEDGER_TABLE",
    "VIEWS_TABLE",
    "Migration",
    "MigrationStatus",
    "ViewDefinition",
    "apply_migrations",
    "dashboard_price_sql",
    "load_migrations",
    "migration_status",
    "shared_sql",
    "view_definitions",
]

LEDGER_TABLE: Final = "llmledger_schema_migrations"
VIEWS_TABLE: Final = "llmledger_schema_views"
"""Which definition of each materialized view the store has (name, checksum of its SQL)."""
_VIEW_HEADER: Final = re.compile(r"^-- llmledger: materialized view ([a-z_]+) to ([a-z_]+)$")
# A template whose first line is this applies to the embedded store only (engine tuning
# for a store that merges on the application's own core); on a server it is recorded as
# applied with nothing run, so the versions stay in step.
EMBEDDED_ONLY: Final = "-- llmledger: embedded store only"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Retried inserts are recognised by their token within this many recent blocks; replicated
# tables have it by default (replicated_deduplication_window).
_DEDUP_WINDOW: Final = 1000


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its number, name, SQL template and checksum of that template."""

    version: int
    name: str
    template: str

    @property
    def embedded_only(self) -> bool:
        """Whether this migration applies to the embedded store only (see :data:`EMBEDDED_ONLY`)."""
        return self.template.startswith(EMBEDDED_ONLY + "\n")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]

    def statements(self, config: StoreConfig) -> list[str]:
        """The migration's statements with identifiers and clauses for ``config`` substituted."""
        if self.embedded_only and not config.embedded:
            return []
        sql = string.Template(self.template).substitute(_substitutions(config))
        return [statement for statement in _split_statements(sql) if statement]


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """A migration and, when applied, when that happened."""

    migration: Migration
    applied_at: datetime | None
    applied_checksum: str | None

    @property
    def applied(self) -> bool:
        return self.applied_at is not None


def load_migrations() -> list[Migration]:
    """Every migration shipped with this version, in order."""
    migrations: list[Migration] = []
    for entry in resources.files("llmledger.exporter._internal").joinpath("schema").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            migrations.append(
                Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8"))
            )
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {versions}")
    return migrations


def _engine(name: str, replicated: bool) -> str:
    # With no arguments a Replicated engine takes the server's default_replica_path /
    # default_replica_name ('/clickhouse/tables/{uuid}/{shard}', '{replica}').
    return f"Replicated{name}" if replicated else name


def _ttl(column: str, days: int) -> str:
    return f"TTL toDateTime({column}) + toIntervalDay({int(days)})" if days else ""


_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]*")


def _string_array(values: list[str]) -> str:
    """A ClickHouse array literal of llmledger's own provider names, each checked to be a plain name."""
    for value in values:
        if not _NAME.fullmatch(value):
            raise ValueError(f"not a plain provider name: {value!r}")
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


def _sql_file(folder: str, name: str) -> str:
    text = resources.files("llmledger.exporter._internal").joinpath("schema", folder, name).read_text()
    sql = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--")).strip()
    # Attribute names first: `${attr:...}` is not a string.Template placeholder.
    return render_attribute_names(sql, f"schema/{folder}/{name}")


def shared_sql(database: str) -> dict[str, str]:
    """Every shared expression (``${NAME}``) and view (``${view_NAME}``), rendered for ``database``."""
    values = {
        "db": quote_identifier(database, "database name"),
        "provider_alias_names": _string_array(list(PROVIDER_ALIASES)),
        "provider_alias_targets": _string_array(list(PROVIDER_ALIASES.values())),
        "price_provider_names": _string_array(list(PROVIDER_IDS)),
        "price_provider_ids": _string_array(list(PROVIDER_IDS.values())),
    }
    folder = resources.files("llmledger.exporter._internal").joinpath("schema")
    for entry in sorted(folder.joinpath("expressions").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            values[entry.name[:-4]] = string.Template(_sql_file("expressions", entry.name)).substitute(values)
    values["call_column_names"] = ", ".join(
        line.strip().split()[0] for line in values["call_columns"].splitlines() if line.strip()
    )
    for entry in folder.joinpath("views").iterdir():
        if entry.name.endswith(".sql"):
            view = string.Template(_sql_file("views", entry.name)).substitute(values)
            values["view_" + entry.name[:-4]] = view
    return values


@dataclass(frozen=True, slots=True)
class ViewDefinition:
    """One materialized view as ``schema/views/NAME.sql`` defines it, rendered for a store."""

    name: str
    target: str
    select: str

    def statements(self, config: StoreConfig) -> list[str]:
        db, on_cluster = _database(config), _on_cluster(config)
        view, target = quote_identifier(self.name, "view name"), quote_identifier(self.target, "table name")
        return [
            f"DROP VIEW IF EXISTS {db}.{view} {on_cluster}",
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view} {on_cluster} TO {db}.{target} AS {self.select}",
        ]

    def checksum(self, config: StoreConfig) -> str:
        return hashlib.sha256("\n".join(self.statements(config)).encode()).hexdigest()[:16]


def view_definitions(config: StoreConfig) -> list[ViewDefinition]:
    """Every materialized view's current definition, by name."""
    shared = shared_sql(config.database)
    folder = resources.files("llmledger.exporter._internal").joinpath("schema", "views")
    views: list[ViewDefinition] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        header = _VIEW_HEADER.match(entry.read_text(encoding="utf-8").splitlines()[0])
        if header is None:
            raise RuntimeError(
                f"schema/views/{entry.name} does not start with '-- llmledger: materialized view NAME to TABLE'"
            )
        views.append(ViewDefinition(header.group(1), header.group(2), shared["view_" + entry.name[:-4]]))
    return views


def dashboard_price_sql() -> dict[str, str]:
    """The shared price expressions for dashboard queries, whose tables are unqualified (the
    data source names the database): ``list_prices`` and ``price_model`` (over columns
    ``provider`` and ``exact_model``)."""
    shared = shared_sql("llmledger_dashboard_db")
    return {
        name: shared[name].replace("`llmledger_dashboard_db`.", "") for name in ("list_prices", "price_model")
    }


def _substitutions(config: StoreConfig) -> dict[str, str]:
    replicated = config.cluster is not None
    return {
        **shared_sql(config.database),
        "db": _database(config),
        "on_cluster": _on_cluster(config),
        "merge_tree": _engine("MergeTree", replicated) + "()",
        "replacing_merge_tree": _engine("ReplacingMergeTree", replicated),
        "aggregating_merge_tree": _engine("AggregatingMergeTree", replicated) + "()",
        "dedup_window": "" if replicated else f", non_replicated_deduplication_window = {_DEDUP_WINDOW}",
        # The embedded store's wider merges for one-row-per-span tables (see 0008).
        "embedded_merge_width": ", merge_selector_base = 10" if config.embedded else "",
        "spans_ttl": _ttl("Timestamp", config.spans_ttl_days),
        "trace_id_ts_ttl": _ttl("Start", config.spans_ttl_days),
        "calls_ttl": _ttl("Timestamp", config.calls_ttl_days),
        "rollup_ttl": _ttl("hour", config.rollup_ttl_days),
        "rollup_day_ttl": _ttl("day", config.rollup_ttl_days),
        # Metrics and logs are kept as long as the raw spans (the Collector's exporter has
        # one TTL for every signal, too).
        "metrics_ttl": _ttl("TimeUnix", config.spans_ttl_days),
        "logs_ttl": _ttl("TimestampTime", config.spans_ttl_days),
    }


def _database(config: StoreConfig) -> str:
    return quote_identifier(config.database, "database name")


def _on_cluster(config: StoreConfig) -> str:
    return f"ON CLUSTER {quote_identifier(config.cluster, 'cluster name')}" if config.cluster else ""


def _split_statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [part.strip() for part in re.split(r";\s*(?:\n|$)", "\n".join(lines))]


def _ledger_ddl(config: StoreConfig) -> list[str]:
    sub = _substitutions(config)
    return [
        f"CREATE DATABASE IF NOT EXISTS {sub['db']} {sub['on_cluster']}",
        f"""CREATE TABLE IF NOT EXISTS {sub["db"]}.{LEDGER_TABLE} {sub["on_cluster"]} (
            version UInt32,
            name String,
            checksum String,
            applied_at DateTime64(3, 'UTC')
        ) ENGINE = {_engine("ReplacingMergeTree", config.cluster is not None)}(applied_at)
        ORDER BY version""",
    ]


def _applied(client: Client, config: StoreConfig) -> dict[int, tuple[str, datetime]]:
    rows = run_query(
        client,
        f"SELECT version, argMax(checksum, applied_at), max(applied_at) "
        f"FROM {_database(config)}.{LEDGER_TABLE} GROUP BY version",
    ).result_rows
    return {int(v): (str(c), a) for v, c, a in rows if isinstance(v, int) and isinstance(a, datetime)}


def migration_status(client: Client, config: StoreConfig) -> list[MigrationStatus]:
    """Every shipped migration and whether it is applied to the store."""
    exists = run_query(
        client,
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {table:String}",
        parameters={"db": config.database, "table": LEDGER_TABLE},
    ).result_rows[0][0]
    applied = _applied(client, config) if exists else {}
    return [
        MigrationStatus(
            m, applied[m.version][1] if m.version in applied else None, applied.get(m.version, (None,))[0]
        )
        for m in load_migrations()
    ]


# One process may hold several writers of one store (the direct span and metrics exporters,
# each opening it on its first export): they apply the schema one at a time, so the second
# finds it applied instead of re-running a migration the first is in the middle of (which
# dropped views under the first one's writes).
_APPLYING = threading.Lock()


def apply_migrations(client: Client, config: StoreConfig, target: int | None = None) -> list[Migration]:
    """Apply every pending migration up to ``target`` (all when ``None``); return those applied."""
    with _APPLYING:
        return _apply_migrations(client, config, target)


def _apply_migrations(client: Client, config: StoreConfig, target: int | None) -> list[Migration]:
    for ddl in _ledger_ddl(config):
        run_command(client, ddl)
    applied = _applied(client, config)
    done: list[Migration] = []
    for migration in load_migrations():
        if migration.version in applied or (target is not None and migration.version > target):
            continue
        for statement in migration.statements(config):
            # A fixed token makes a re-run of a half-applied migration's backfill a no-op.
            run_command(
                client,
                statement,
                settings={"insert_deduplication_token": f"llmledger-migration-{migration.version}"},
            )
        run_command(
            client,
            f"INSERT INTO {_database(config)}.{LEDGER_TABLE} (version, name, checksum, applied_at) "
            "VALUES ({version:UInt32}, {name:String}, {checksum:String}, {applied_at:DateTime64(3)})",
            parameters={
                "version": migration.version,
                "name": migration.name,
                "checksum": migration.checksum,
                "applied_at": datetime.now(UTC).replace(tzinfo=None),
            },
        )
        done.append(migration)
    if target is None or target >= max(m.version for m in load_migrations()):
        _reconcile_views(client, config)
    return done


def _reconcile_views(client: Client, config: StoreConfig) -> None:
    """Create every materialized view whose current definition the store does not have yet.

    Views are defined once (``schema/views/``) and created here after the last migration,
    so a migration changes tables and the views follow; a view whose definition changed is
    dropped and created again (not changed with MODIFY QUERY, which broke the deduplication
    of retried batches; see 0007). Like migrations, this runs with the store idle.
    """
    db, on_cluster = _database(config), _on_cluster(config)
    run_command(
        client,
        f"""CREATE TABLE IF NOT EXISTS {db}.{VIEWS_TABLE} {on_cluster} (
            name String,
            checksum String,
            applied_at DateTime64(3, 'UTC')
        ) ENGINE = {_engine("ReplacingMergeTree", config.cluster is not None)}(applied_at)
        ORDER BY name""",
    )
    rows = run_query(
        client, f"SELECT name, argMax(checksum, applied_at) FROM {db}.{VIEWS_TABLE} GROUP BY name"
    )
    have = {str(name): str(checksum) for name, checksum in rows.result_rows}
    for view in view_definitions(config):
        checksum = view.checksum(config)
        if have.get(view.name) == checksum:
            continue
        for statement in view.statements(config):
            run_command(client, statement)
        run_command(
            client,
            f"INSERT INTO {db}.{VIEWS_TABLE} (name, checksum, applied_at) "
            "VALUES ({name:String}, {checksum:String}, {applied_at:DateTime64(3)})",
            parameters={
                "name": view.name,
                "checksum": checksum,
                "applied_at": datetime.now(UTC).replace(tzinfo=None),
            },
        )
