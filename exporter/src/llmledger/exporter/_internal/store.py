"""Opening the configured store: a ClickHouse server or the embedded chDB engine, one client for both.

chDB locks its data directory (a ``flock`` on ``<store>/status``), so one process owns an
embedded store at a time. When that process is ``llmledger collector``, every other tool
reaches the store through the collector's ClickHouse HTTP interface (see
:mod:`~llmledger.exporter._internal.store_owner`), with the same clickhouse-connect client
as a server. When another process holds it, :class:`StoreLockedError` says which store,
which process, and what to do, instead of chDB's bare initialisation error.
"""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.query import QueryResult

from llmledger.exporter._internal.config import ConfigError, StoreConfig
from llmledger.exporter._internal.errors import OUTSIDE_FAILURES
from llmledger.exporter._internal.store_owner import ADMIN_USER, READONLY_USER, OwnerRecord, current_owner

__all__ = [
    "STORE_FAILURES",
    "StoreError",
    "StoreLockedError",
    "open_store",
    "read_only_settings",
    "run_command",
    "run_query",
    "store_lock_holder",
]


_LOCK_WAIT_SECONDS: Final = 3.0


class StoreError(RuntimeError):
    """The store could not be opened."""


# What a direct exporter's write survives and retries: the store down, refusing or locked,
# the network, the disk, or the store misnamed in the environment (opened on the first write).
STORE_FAILURES: Final = (*OUTSIDE_FAILURES, StoreError, ConfigError)


class StoreLockedError(StoreError):
    """Another process owns the embedded store."""

    def __init__(self, path: Path, holder: str | None) -> None:
        self.path = path
        self.holder = holder
        who = f" ({holder})" if holder else ""
        super().__init__(
            f"the embedded llmledger store at {path} is open in another process{who} that does not serve it. "
            "An embedded store has one owner at a time: let that process finish, or run `llmledger collector` "
            "as the store's owner (every tool then reaches the store through it), or point "
            "LLMLEDGER_CLICKHOUSE_URL at a different store or a ClickHouse server."
        )


def store_lock_holder(path: Path) -> tuple[bool, str | None]:
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


def open_store(
    config: StoreConfig,
    *,
    use_database: bool = True,
    write: bool = False,
    create: bool | None = None,
    via_owner: bool = True,
    in_process: bool = True,
    lock_wait_seconds: float | None = _LOCK_WAIT_SECONDS,
) -> Client:
    """A clickhouse-connect client for the configured store.

    A ClickHouse server is connected to directly. An embedded store that a running collector
    owns is reached through that collector's ClickHouse HTTP interface (``via_owner``), as
    the read-only user unless ``write``; otherwise this process opens it with chDB. A store
    that does not exist yet is created only when ``create`` (default: ``write``), so a
    read never leaves an empty store behind. Without ``in_process`` an embedded store is
    reached only through its collector (an app process should not carry the engine).
    ``lock_wait_seconds`` is how long to wait for another process (a short command) to let
    go of an embedded store before :class:`StoreLockedError`; ``None`` asks chDB directly.

    With ``use_database`` the client's default database is the configured one when it
    exists (so ``SELECT … FROM llm_calls`` works unqualified); otherwise ``default``.
    """
    path = config.embedded_path
    create = write if create is None else create
    try:
        if path is not None:
            owner = current_owner(path) if via_owner else None
            if owner is not None:
                client = _owner_client(owner, write=write)
            elif not in_process:
                raise StoreError(
                    f"no llmledger collector serves the embedded store {path}: start `llmledger collector` "
                    "(it serves the store to every tool), or set LLMLEDGER_CLICKHOUSE_URL to a ClickHouse server"
                )
            else:
                client = _open_embedded(config, path, create=create, lock_wait_seconds=lock_wait_seconds)
        else:
            client = clickhouse_connect.get_client(  # pyright: ignore[reportUnknownMemberType]
                dsn=config.url, database="default", autogenerate_session_id=False
            )
    except StoreError:
        raise
    except Exception as exc:
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


def _owner_client(owner: OwnerRecord, *, write: bool) -> Client:
    """A client of the collector that owns the store, over its ClickHouse HTTP interface."""
    try:
        return clickhouse_connect.get_client(  # pyright: ignore[reportUnknownMemberType]
            host=owner.host,
            port=owner.port,
            username=ADMIN_USER if write else READONLY_USER,
            password=owner.admin_password if write else owner.readonly_password,
            database="default",
            autogenerate_session_id=False,
        )
    except Exception as exc:
        raise StoreError(
            f"the embedded store is owned by llmledger collector PID {owner.pid}, but its ClickHouse HTTP "
            f"interface at {owner.url} did not answer: {exc}"
        ) from exc


def _open_embedded(
    config: StoreConfig, path: Path, *, create: bool, lock_wait_seconds: float | None
) -> Client:
    if importlib.util.find_spec("chdb") is None:
        raise StoreError(
            f"the embedded store {config.display_url} needs chDB: install the exporter with its embedded "
            "extra (pip install './exporter[embedded]' from a checkout), start `llmledger collector` "
            "to serve the store, or set LLMLEDGER_CLICKHOUSE_URL to a ClickHouse server"
        )
    if not path.exists():
        if not create:
            raise StoreError(
                f"there is no llmledger store at {path}: create it with `llmledger schema apply`, "
                "start `llmledger collector` (it creates the store), or set LLMLEDGER_CLICKHOUSE_URL"
            )
        path.mkdir(parents=True, exist_ok=True)
    elif not path.is_dir():
        raise StoreError(f"the embedded store path {path} exists and is not a directory")
    # Ask the lock before chDB does: chDB prints its own lock error on stderr before failing.
    # Another short-lived command (a report, a schema apply) may hold it for a moment: wait a little.
    # (This process may hold it already: chDB then shares its engine with the new client.)
    deadline = time.monotonic() + (lock_wait_seconds or 0.0)
    locked, holder = store_lock_holder(path) if lock_wait_seconds is not None else (False, None)
    while locked and holder != f"PID {os.getpid()}" and time.monotonic() < deadline:
        time.sleep(0.1)
        locked, holder = store_lock_holder(path)
    if locked and holder != f"PID {os.getpid()}":
        raise StoreLockedError(path, holder)
    try:
        return clickhouse_connect.get_client(dsn=f"chdb://{path}")  # pyright: ignore[reportUnknownMemberType]
    except Exception as exc:
        locked, holder = store_lock_holder(path)
        if locked:
            raise StoreLockedError(path, holder) from exc
        raise


def read_only_settings(client: Client) -> dict[str, object]:
    """``readonly=1`` for a read, unless the connection is read-only already.

    A read-only user (the collector's ``llmledger_readonly``, a server's readonly profile)
    may not change ``readonly`` at all; it needs no asking.
    """
    current = client.server_settings.get("readonly")
    return {} if current is not None and current.value not in ("", "0") else {"readonly": 1}


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
