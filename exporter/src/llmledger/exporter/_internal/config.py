"""The exporter's configuration: every ``LLMLEDGER_*`` variable the exporter distribution reads
outside the collector's own settings table (:mod:`.collector.config`), read here and nowhere else.

:class:`StoreConfig` is where spans land and how the schema is laid out, for every part;
:class:`ExportSettings` how the direct span exporter batches; :class:`PriceSources` and
:func:`tenant_user_password` the CLI's defaults from the environment. Each resolves lowest to
highest: the defaults, a settings file's values (the collector's TOML file, for the store),
the environment, then flags (or arguments in code); then is validated once with every
problem reported together, the way the Collector's ``clickhouseexporter`` validates its
config. docs/configuration.md says the same for users.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from llmledger.exporter._internal.identifiers import identifier_problem

__all__ = [
    "DEFAULT_DATABASE",
    "ENV_CLICKHOUSE_URL",
    "ConfigError",
    "ExportSettings",
    "PriceSources",
    "StoreConfig",
    "default_store_path",
    "tenant_user_password",
]

_logger = logging.getLogger(__name__)

ENV_CLICKHOUSE_URL: Final = "LLMLEDGER_CLICKHOUSE_URL"
ENV_DATABASE: Final = "LLMLEDGER_CLICKHOUSE_DATABASE"
ENV_CLUSTER: Final = "LLMLEDGER_CLICKHOUSE_CLUSTER"
ENV_SPANS_TTL_DAYS: Final = "LLMLEDGER_SPANS_TTL_DAYS"
ENV_CALLS_TTL_DAYS: Final = "LLMLEDGER_CALLS_TTL_DAYS"
ENV_ROLLUP_TTL_DAYS: Final = "LLMLEDGER_ROLLUP_TTL_DAYS"

_ENV_BY_FIELD: Final = {
    "url": ENV_CLICKHOUSE_URL,
    "database": ENV_DATABASE,
    "cluster": ENV_CLUSTER,
    "spans_ttl_days": ENV_SPANS_TTL_DAYS,
    "calls_ttl_days": ENV_CALLS_TTL_DAYS,
    "rollup_ttl_days": ENV_ROLLUP_TTL_DAYS,
}

_TTL_FIELDS: Final = ("spans_ttl_days", "calls_ttl_days", "rollup_ttl_days")

ENV_EXPORT_BATCH_SPANS: Final = "LLMLEDGER_EXPORT_BATCH_SPANS"
ENV_EXPORT_DELAY_MS: Final = "LLMLEDGER_EXPORT_DELAY_MS"
# The CLI's defaults from the environment (the price file as the app reads it).
ENV_PRICE_FILE: Final = "LLMLEDGER_PRICE_FILE"
ENV_TENANT_USER_PASSWORD: Final = "LLMLEDGER_TENANT_USER_PASSWORD"  # noqa: S105  (a variable's name)

DEFAULT_DATABASE: Final = "llmledger"
_SCHEMES: Final = ("http", "https", "chdb")


class ConfigError(ValueError):
    """The configuration has one or more problems; ``problems`` lists each of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid llmledger store configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def default_store_path(env: Mapping[str, str] | None = None) -> Path:
    """The embedded store in the user's data directory (XDG base directories)."""
    env = os.environ if env is None else env
    data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "llmledger" / "store"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the store is and how its schema is laid out.

    ``url`` is ``http(s)://user:pass@host:port/db`` for a server or ``chdb:///path`` for the
    embedded engine. A database in the URL path is used unless ``database`` is given. TTLs
    are in days, 0 meaning "keep forever"; raw spans should not outlive the rollups built
    from them.
    """

    url: str
    database: str = DEFAULT_DATABASE
    cluster: str | None = None
    spans_ttl_days: int = 0
    calls_ttl_days: int = 0
    rollup_ttl_days: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> StoreConfig:
        """:meth:`resolve` without a settings file: the environment, then non-``None`` ``overrides`` (flags)."""
        return cls.resolve(env, None, overrides)

    @classmethod
    def resolve(
        cls,
        env: Mapping[str, str] | None = None,
        file: Mapping[str, object] | None = None,
        flags: Mapping[str, object] | None = None,
    ) -> StoreConfig:
        """Resolve and validate: defaults < ``file`` (a settings file's values, by field name) <
        the environment (``os.environ`` unless ``env``) < ``flags`` (``None`` meaning not given).

        A server URL's path names the database, as clickhouse-connect reads a DSN's path, at
        the URL's own rank: a database named at the same rank wins over it (``--database``
        beside ``--url``), and it wins over one named below it (``--url http://h:8123/db``
        over ``LLMLEDGER_CLICKHOUSE_DATABASE``, ``LLMLEDGER_CLICKHOUSE_URL`` over the file's
        ``database``).
        """
        env = os.environ if env is None else env
        problems: list[str] = []
        from_env: dict[str, object] = {}
        for name, var in _ENV_BY_FIELD.items():
            raw = env.get(var)
            if not raw:
                continue
            if name not in _TTL_FIELDS:
                from_env[name] = raw
                continue
            try:
                from_env[name] = int(raw)
            except ValueError:
                problems.append(f"{var}={raw!r} is not a whole number of days")
        values: dict[str, object] = {"url": f"chdb://{default_store_path(env)}"}
        for source in (file or {}, from_env, flags or {}):
            given = {name: value for name, value in source.items() if value is not None}
            values.update(given)
            database = _database_from_url(str(given["url"])) if "url" in given else None
            if database is not None and "database" not in given:
                values["database"] = database
        config = cls(**values)  # type: ignore[arg-type]
        config.validate(problems)
        return config

    def replace(self, **changes: object) -> StoreConfig:
        """A copy with ``changes`` applied and validated."""
        config = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        config.validate()
        return config

    def validate(self, problems: list[str] | None = None) -> None:
        """Raise :class:`ConfigError` listing every problem, or return when there is none."""
        problems = [] if problems is None else problems
        parts = urlsplit(self.url)
        if parts.scheme not in _SCHEMES:
            problems.append(
                f"store URL {self.url!r} must start with http://, https:// or chdb:// "
                f"(set {ENV_CLICKHOUSE_URL} or pass --url)"
            )
        elif parts.scheme == "chdb" and not self.embedded_path:
            problems.append(f"embedded store URL {self.url!r} needs a path: chdb:///path/to/store")
        elif parts.scheme == "chdb" and (
            parts.netloc not in ("", "localhost") or not str(self.embedded_path).startswith("/")
        ):
            problems.append(
                f"embedded store URL {self.url!r} must name an absolute path, with three slashes: "
                f"chdb:///absolute/path/to/store (chdb://{parts.netloc}{parts.path} would be relative "
                "to wherever the command runs)"
            )
        elif parts.scheme != "chdb" and not parts.hostname:
            problems.append(f"server URL {self.url!r} has no host")
        for problem in (
            identifier_problem(self.database, "database name"),
            None if self.cluster is None else identifier_problem(self.cluster, "cluster name"),
        ):
            if problem is not None:
                problems.append(problem)
        if self.cluster is not None and parts.scheme == "chdb":
            problems.append("cluster mode needs a ClickHouse server; the embedded store is a single node")
        for name in _TTL_FIELDS:
            days = getattr(self, name)
            if not isinstance(days, int) or days < 0:
                problems.append(
                    f"{name} must be a whole number of days >= 0 (0 keeps data forever), got {days!r}"
                )
        if not problems:
            problems.extend(self._ttl_order_problems())
        if problems:
            raise ConfigError(problems)

    def _ttl_order_problems(self) -> list[str]:
        # A TTL of 0 means forever, so it sorts last.
        def span(days: int) -> float:
            return days or float("inf")

        problems: list[str] = []
        if span(self.spans_ttl_days) > span(self.calls_ttl_days):
            problems.append(
                "spans_ttl_days must not exceed calls_ttl_days: raw spans are kept shorter than calls"
            )
        if span(self.calls_ttl_days) > span(self.rollup_ttl_days):
            problems.append(
                "calls_ttl_days must not exceed rollup_ttl_days: rollups outlive the rows they sum"
            )
        return problems

    @property
    def embedded(self) -> bool:
        """True for the in-process chDB store."""
        return self.url.startswith("chdb:")

    @property
    def embedded_path(self) -> Path | None:
        """The embedded store's directory, or ``None`` for a server."""
        if not self.embedded:
            return None
        parts = urlsplit(self.url)
        path = (
            unquote(parts.netloc + parts.path)
            if parts.netloc not in ("", "localhost")
            else unquote(parts.path)
        )
        return Path(path) if path else None

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for messages and logs."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()


def _database_from_url(url: str) -> str | None:
    # As clickhouse-connect reads a DSN: the path's first segment names the database.
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        name = parts.path.lstrip("/").split("/")[0]
        return unquote(name) if name else None
    return None


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """How the direct span exporter batches (``OTEL_TRACES_EXPORTER=llmledger``).

    ``max_batch_spans`` spans go into one insert (one insert costs the engine a fixed ~60 ms,
    so the SDK's small export batches are written together); a span waits at most
    ``max_delay_s`` for its batch to fill, 0 writing every export as it arrives.
    """

    max_batch_spans: int = 20_000
    max_delay_s: float = 1.0

    @classmethod
    def resolve(
        cls, env: Mapping[str, str] | None = None, arguments: Mapping[str, object] | None = None
    ) -> ExportSettings:
        """Defaults < ``LLMLEDGER_EXPORT_BATCH_SPANS`` / ``LLMLEDGER_EXPORT_DELAY_MS`` < ``arguments``
        (the exporter's constructor arguments by field name, ``None`` meaning not given).

        The exporter runs inside the app, so a variable that is not a whole number in range
        is logged as an error naming it and its default used: a typo never stops the app.
        Arguments come from code, and a wrong one raises :class:`ValueError` there, as the
        SDK's ``BatchSpanProcessor`` does for its own.
        """
        env = os.environ if env is None else env
        defaults = cls()
        batch = _whole_number(env, ENV_EXPORT_BATCH_SPANS, defaults.max_batch_spans, minimum=1)
        delay_ms = _whole_number(env, ENV_EXPORT_DELAY_MS, round(defaults.max_delay_s * 1000), minimum=0)
        settings = cls(batch, delay_ms / 1000)
        given = {name: value for name, value in (arguments or {}).items() if value is not None}
        settings = dataclasses.replace(settings, **given)  # type: ignore[arg-type]
        if settings.max_batch_spans < 1:
            raise ValueError(f"max_batch_spans must be at least 1, got {settings.max_batch_spans!r}")
        if settings.max_delay_s < 0:
            raise ValueError(f"max_delay_s must be >= 0, got {settings.max_delay_s!r}")
        return settings


def _whole_number(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        _logger.error("%s=%r is not a whole number >= %d; using %d", name, raw, minimum, default)
        return default
    return value


@dataclass(frozen=True, slots=True)
class PriceSources:
    """Where ``llmledger prices sync`` and ``prices show`` take prices from, as the app does.

    ``price_file`` is a TOML price file (``LLMLEDGER_PRICE_FILE``); ``azure_deployments`` maps
    an Azure OpenAI deployment to the model it runs (``LLMLEDGER_AZURE_DEPLOYMENTS``).
    """

    price_file: str | None = None
    azure_deployments: Mapping[str, str] = dataclasses.field(default_factory=dict[str, str])

    @classmethod
    def resolve(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        price_file: str | None = None,
        azure_deployments: Mapping[str, str] | None = None,
    ) -> PriceSources:
        """The environment, read as the instrumentation reads it, under the flags: ``--price-file``
        replaces the variable's file, and each ``--azure-deployment`` maps its deployment over
        the variable's mapping of it (the others stay)."""
        # The instrumentation's own reading, so a deployment maps here as it does in the app
        # (an entry that is not deployment=model is left out there too, with a warning).
        from llmledger.instrumentation.pricing import azure_deployments_from_env

        env = os.environ if env is None else env
        return cls(
            price_file=price_file or env.get(ENV_PRICE_FILE) or None,
            azure_deployments={**azure_deployments_from_env(env), **(azure_deployments or {})},
        )


def tenant_user_password(flag: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """``llmledger tenant-user create``'s password: ``--password``, else
    ``LLMLEDGER_TENANT_USER_PASSWORD``; ``None`` when neither is set (one is generated)."""
    env = os.environ if env is None else env
    return flag or env.get(ENV_TENANT_USER_PASSWORD) or None
