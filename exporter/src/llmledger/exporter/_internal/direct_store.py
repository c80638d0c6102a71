"""What both direct exporters (spans, metrics) do the same way with the store they write to.

:class:`LazyStore` opens it on the first write, off the app's import path, with the schema
applied; after a failed open, writes fail fast for :data:`REOPEN_AFTER_S` before the next
attempt: opening an embedded store costs ~0.3 s of the app's CPU, and a store that just
failed to open (locked, unreachable) is not tried again on every batch. :class:`FailureLog`
says a run of failed writes once when it begins and once when it ends, so an app whose
store is away is not flooded.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from clickhouse_connect.driver.client import Client

from llmledger.exporter._internal.config import StoreConfig
from llmledger.exporter._internal.errors import contained
from llmledger.exporter._internal.migrations import apply_migrations
from llmledger.exporter._internal.store import StoreError, open_store

__all__ = ["REOPEN_AFTER_S", "FailureLog", "LazyStore"]

# After the store fails to open, writes fail fast for this long before the next attempt.
REOPEN_AFTER_S: Final = 30.0


class LazyStore:
    """The store a direct exporter writes to, opened on first use (see the module doc).

    Not thread-safe: the exporter holds its write lock around :meth:`open` and :meth:`close`.
    """

    def __init__(self, config: StoreConfig | None, *, apply_schema: bool) -> None:
        """``config`` ``None``: the store from the environment, read at the first open."""
        self._config = config
        self._apply_schema = apply_schema
        self._client: Client | None = None
        self._reopen_at = 0.0

    def open(self) -> tuple[Client, StoreConfig]:
        """The open connection and the store's configuration, opening it if need be;
        :class:`.store.StoreError` while a failed open is not retried yet."""
        if self._client is None or self._config is None:
            if time.monotonic() < self._reopen_at:
                raise StoreError(
                    f"not retrying the store for another {self._reopen_at - time.monotonic():.0f} s"
                )
            self._reopen_at = time.monotonic() + REOPEN_AFTER_S
            config = self._config or StoreConfig.from_env()
            self._config = config
            client = open_store(config, use_database=False, write=True)
            try:
                if self._apply_schema:
                    apply_migrations(client, config)
            except Exception:
                client.close()
                raise
            self._client = client
            self._reopen_at = 0.0
        return self._client, self._config

    def close(self, site: str) -> None:
        """Let the connection go (a failure to close changes nothing: contained at ``site``)."""
        if self._client is not None:
            with contained(site):
                self._client.close()
            self._client = None

    def forget(self) -> None:
        """Drop the connection without closing it: in a forked child it is the parent's."""
        self._client = None


class FailureLog:
    """A run of failed writes: an error when it begins, debug lines while it lasts, a warning when it ends."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        """``what`` names the writes in the log lines ("span export", "metric export")."""
        self._logger = logger
        self._what = what
        self.failing = False

    def failed(self, exc: BaseException, message: str, *args: object) -> None:
        """One failed write (``exc``); ``message`` (with ``args``) is logged only if it begins a run."""
        if self.failing:
            self._logger.debug("llmledger %s still failing", self._what, exc_info=exc)
            return
        self.failing = True
        self._logger.error(message, *args)

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            self._logger.warning("llmledger %s recovered", self._what)
