"""Opening the configured store: a ClickHouse server or the embedded chDB engine, one client for both.

chDB locks its data directory (a ``flock`` on ``<store>/status``), so one process owns an
embedded store at a time; when another process holds it, :class:`StoreLockedError` says
which store, which process, and what to do instead of chDB's bare initialisation error.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.query import QueryResult

from llmledger.exporter._internal.config import StoreConfig

__all__ = ["StoreError", "StoreLockedError", "open_store", "run_command", "run_query"]


class StoreError(RuntimeError):
    """The store could not be opened."""


class StoreLockedError(StoreError):
    """Another process owns the embedded store."""

    def __init__(self, path: Path, holder: str | None) -> None:
        self.path = path
        self.holder = holder
        who = f" (held by {holder})" if holder else ""
        super().__init__(
            f"the embedded llmledger store at {path} is in use by another process{who}. "
            "An embedded store has one owner at a time: stop that process (often `llmledger collector`), "
            "send spans to it over OTLP instead of opening the store here, or point "
            "LLMLEDGER_CLICKHOUSE_URL at a different store or a ClickHouse server."
        )


def _lock_holder(path: Path) -> tuple[bool, str | None]:
    """Whether another process holds the store's lock, and who (from the lock file) if known."""
    status = path / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False, None
            text = status.read_text(errors="replace")
            pids = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("PID:")]
            return True, f"PID {pids[0]}" if pids else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, None
    finally:
        os.close(fd)


def open_store(config: StoreConfig, *, use_database: bool = True) -> Client:
    """A clickhouse-connect client for the configured store.

    With ``use_database`` the client's default database is the configured one when it
    exists (so ``SELECT … FROM llm_calls`` works unqualified); otherwise ``default``.
    """
    path = config.embedded_path
    try:
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
            client: Client = clickhouse_connect.get_client(dsn=f"chdb://{path}")  # pyright: ignore[reportUnknownMemberType]
        else:
            client = clickhouse_connect.get_client(dsn=config.url, database="default")  # pyright: ignore[reportUnknownMemberType]
    except ImportError as exc:
        raise StoreError(
            f"the embedded store {config.display_url} needs chDB: install llmledger-exporter[embedded], "
            "or set LLMLEDGER_CLICKHOUSE_URL to a ClickHouse server"
        ) from exc
    except Exception as exc:
        if path is not None:
            locked, holder = _lock_holder(path)
            if locked:
                raise StoreLockedError(path, holder) from exc
        hint = (
            "check that the ClickHouse server is up and that LLMLEDGER_CLICKHOUSE_URL (or --url) names it"
            if path is None
            else "check the path and its permissions"
        )
        raise StoreError(f"cannot open the llmledger store {config.display_url}: {exc}\n  {hint}") from exc
    if use_database:
        exists = run_query(
            client,
            "SELECT count() FROM system.databases WHERE name = {db:String}",
            parameters={"db": config.database},
        ).result_rows[0][0]
        if exists:
            client.database = config.database
    return client


# clickhouse-connect's signatures are partly untyped; these two keep that in one place.


def run_query(
    client: Client,
    sql: str,
    *,
    parameters: Mapping[str, object] | None = None,
    settings: Mapping[str, object] | None = None,
) -> QueryResult:
    """``client.query`` with bound ``parameters`` and per-call ``settings``."""
    return client.query(sql, parameters=dict(parameters or {}), settings=dict(settings or {}))  # pyright: ignore[reportUnknownMemberType]


def run_command(
    client: Client,
    sql: str,
    *,
    parameters: Mapping[str, object] | None = None,
    settings: Mapping[str, object] | None = None,
) -> None:
    """``client.command`` (DDL, INSERT ... SELECT) with bound ``parameters`` and per-call ``settings``."""
    client.command(sql, parameters=dict(parameters or {}), settings=dict(settings or {}))  # pyright: ignore[reportUnknownMemberType]
