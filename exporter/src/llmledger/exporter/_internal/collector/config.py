"""The collector's one typed configuration, from defaults, a TOML file, the environment and flags.

Every setting is a field of :class:`CollectorConfig`, and its default is written there and
nowhere else: :data:`SETTINGS` is read from those fields and gives each setting its file
key, ``--flag`` and ``LLMLEDGER_COLLECTOR_<NAME>`` variable, so the CLI, the environment,
the TOML file and the table in docs/collector.md all speak of the same settings. The drain
process gets the built configuration whole (:class:`.messages.DrainStart`) and reads no
default of its own.

Precedence, lowest to highest: the defaults, the TOML file (``--config`` or
``LLMLEDGER_COLLECTOR_CONFIG``), environment variables (the store keeps
``LLMLEDGER_CLICKHOUSE_URL``), then command-line flags. :meth:`CollectorConfig.build`
reports every problem at once.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from llmledger.exporter._internal.config import ConfigError, StoreConfig, default_store_path

from .otlp_signals import Signal
from .spool import FsyncPolicy

__all__ = [
    "ENV_CONFIG_FILE",
    "SETTINGS",
    "CollectorConfig",
    "FsyncPolicy",
    "Kind",
    "LogFormat",
    "LogLevel",
    "Setting",
    "default_data_dir",
]

ENV_CONFIG_FILE: Final = "LLMLEDGER_COLLECTOR_CONFIG"
_ENV_PREFIX: Final = "LLMLEDGER_COLLECTOR_"
_SIZE: Final = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$", re.IGNORECASE)
_SIZE_UNITS: Final = {
    "b": 1,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
}

Kind = Literal["str", "bool", "int", "size", "seconds", "path", "choice"]
LogFormat = Literal["logfmt", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
_SETTING: Final = "llmledger.setting"


@dataclass(frozen=True, slots=True)
class _About:
    """What a field's metadata says about it as a setting (its default is the field's own)."""

    kind: Kind
    help: str
    choices: tuple[str, ...] = ()
    default_text: str | None = None  # for a default computed at start (the data directory)


def _about(
    kind: Kind, help: str, *, choices: tuple[str, ...] = (), default_text: str | None = None
) -> dict[str, _About]:
    """A :class:`CollectorConfig` field's metadata that makes it a setting (the default stays the field's)."""
    return {_SETTING: _About(kind, help, choices, default_text)}


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/llmledger/collector``, beside the default embedded store."""
    return default_store_path(env).parent / "collector"


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration setting, read from a :class:`CollectorConfig` field (see :data:`SETTINGS`)."""

    name: str
    kind: Kind
    default: object  # ``None``: unset by default (or, for ``data_dir``, computed at start)
    help: str
    choices: tuple[str, ...] = ()
    default_text: str | None = None

    @property
    def env(self) -> str:
        return _ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def optional(self) -> bool:
        """Whether the setting may be unset (``None``) in a built configuration."""
        return self.default is None and self.default_text is None


# The store's settings a collector file may carry, by file key: the same fields the
# environment and the flags give ``StoreConfig.resolve``, so a file alone can name the store
# and how its schema is laid out (``apply_schema``).
_STORE_KEYS: Final = {
    "clickhouse_url": "url",
    "database": "database",
    "cluster": "cluster",
    "spans_ttl_days": "spans_ttl_days",
    "calls_ttl_days": "calls_ttl_days",
    "rollup_ttl_days": "rollup_ttl_days",
}
_STORE_DAYS: Final = frozenset(("spans_ttl_days", "calls_ttl_days", "rollup_ttl_days"))


def _store_value(key: str, raw: object, source: str, problems: list[str]) -> object:
    """A store setting from the file: text, or whole days for a TTL (``30`` or ``"30"``)."""
    if key not in _STORE_DAYS:
        return str(raw)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    problems.append(f"{key} (from {source}): {raw!r} is not a whole number of days")
    return None


def _parse(setting: Setting, raw: object, source: str, problems: list[str]) -> object:
    where = f"{setting.name} (from {source})"
    kind = setting.kind
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        problems.append(f"{where}: {raw!r} is not true or false")
    elif kind == "int":
        try:
            return int(str(raw).strip()) if not isinstance(raw, bool) else None
        except ValueError:
            problems.append(f"{where}: {raw!r} is not a whole number")
    elif kind == "size":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        match = _SIZE.match(str(raw))
        if match:
            return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
        problems.append(f"{where}: {raw!r} is not a size (bytes, or a number with KiB, MiB or GiB)")
    elif kind == "seconds":
        try:
            return float(str(raw).strip())
        except ValueError:
            problems.append(f"{where}: {raw!r} is not a number of seconds")
    elif kind == "path":
        return Path(str(raw)).expanduser() if str(raw) else None
    elif kind == "choice":
        text = str(raw).strip().lower()
        if text in setting.choices:
            return text
        problems.append(f"{where}: {raw!r} is not one of {', '.join(setting.choices)}")
    else:
        return str(raw)
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_endpoint(endpoint: str) -> tuple[str, int] | None:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104  (":4318" means every interface, as upstream)


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    """Every collector setting (see :data:`SETTINGS`), with the store it writes to."""

    store: StoreConfig
    grpc_endpoint: str = field(
        default="127.0.0.1:4317",
        metadata=_about("str", "OTLP/gRPC listen address (host:port; empty disables)"),
    )
    http_endpoint: str = field(
        default="127.0.0.1:4318",
        metadata=_about(
            "str", "OTLP/HTTP listen address (host:port), also /healthz, /readyz, /metrics; empty disables"
        ),
    )
    data_dir: Path = field(
        default_factory=default_data_dir,
        metadata=_about(
            "path",
            "spool and state directory (default: $XDG_DATA_HOME/llmledger/collector)",
            default_text="$XDG_DATA_HOME/llmledger/collector",
        ),
    )
    spool_max_bytes: int = field(
        default=1 << 30, metadata=_about("size", "spool bound; past it requests get 429 / RESOURCE_EXHAUSTED")
    )
    spool_segment_bytes: int = field(
        default=32 << 20, metadata=_about("size", "size at which the spool starts a new segment file")
    )
    fsync: FsyncPolicy = field(
        default="always",
        metadata=_about(
            "choice",
            "always: ack after fsync (group commit); never: ack after the write (survives a crash, not power loss)",
            choices=("always", "never"),
        ),
    )
    max_request_bytes: int = field(
        default=8 << 20, metadata=_about("size", "largest request body, after decompression")
    )
    max_concurrent_requests: int = field(
        default=32, metadata=_about("int", "requests decoded at once; more wait (HTTP) or are refused (gRPC)")
    )
    batch_max_spans: int = field(
        default=100_000, metadata=_about("int", "most spans per insert into the store")
    )
    batch_max_bytes: int = field(default=128 << 20, metadata=_about("size", "most spooled bytes per insert"))
    batch_linger_seconds: float = field(
        default=1.0,
        metadata=_about(
            "seconds",
            "while less than a quarter of batch_max_bytes waits, an insert waits until the oldest waiting "
            "request is this old (0: insert at once)",
        ),
    )
    retry_initial_seconds: float = field(
        default=0.5, metadata=_about("seconds", "first back-off after a failed insert (doubles, with jitter)")
    )
    retry_max_seconds: float = field(
        default=30.0, metadata=_about("seconds", "longest back-off between insert attempts")
    )
    unexplained_error_seconds: float = field(
        default=300.0,
        metadata=_about(
            "seconds",
            "an insert error that names neither the data nor the store's state (see docs/collector.md): "
            "how long one span may fail with it, while the store answers and takes nothing else, "
            "before it goes to the dead-letter file",
        ),
    )
    shutdown_timeout_seconds: float = field(
        default=15.0, metadata=_about("seconds", "on SIGTERM, drain the spool for at most this long")
    )
    auth_token: str | None = field(
        default=None, metadata=_about("str", "bearer token clients must send (Authorization: Bearer <token>)")
    )
    auth_token_file: Path | None = field(
        default=None, metadata=_about("path", "file holding the bearer token (instead of auth_token)")
    )
    tls_cert_file: Path | None = field(
        default=None, metadata=_about("path", "PEM certificate (chain) for TLS on both ports")
    )
    tls_key_file: Path | None = field(default=None, metadata=_about("path", "PEM private key for TLS"))
    apply_schema: bool = field(
        default=True, metadata=_about("bool", "apply pending schema migrations on start")
    )
    native_insert: bool = field(
        default=True,
        metadata=_about(
            "bool",
            "embedded store: the engine decodes spooled OTLP itself (faster); off: rows are built in Python",
        ),
    )
    query_server: bool = field(
        default=True,
        metadata=_about(
            "bool",
            "embedded store: serve it over ClickHouse's HTTP interface on clickhouse_http_endpoint, so the CLI, "
            "Grafana and any ClickHouse client reach it while the collector owns it",
        ),
    )
    clickhouse_http_endpoint: str = field(
        default="127.0.0.1:8123",
        metadata=_about(
            "str", "embedded store: loopback address (host:port) of its ClickHouse HTTP interface"
        ),
    )
    clickhouse_http_password: str | None = field(
        default=None,
        metadata=_about(
            "str",
            "password of the read-write user `llmledger` on the ClickHouse HTTP interface "
            "(default: random per start, in <store>.owner.json)",
        ),
    )
    clickhouse_http_readonly_password: str | None = field(
        default=None,
        metadata=_about(
            "str",
            "password of the read-only user `llmledger_readonly` (dashboards, reports; "
            "default: random per start, in <store>.owner.json)",
        ),
    )
    log_format: LogFormat = field(
        default="logfmt", metadata=_about("choice", "structured log format", choices=("logfmt", "json"))
    )
    log_level: LogLevel = field(
        default="info", metadata=_about("choice", "log level", choices=("debug", "info", "warning", "error"))
    )

    @classmethod
    def build(
        cls,
        flags: Mapping[str, object] | None = None,
        env: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> CollectorConfig:
        """Defaults < TOML file < environment < ``flags`` (non-``None`` values); every problem at once.

        ``flags`` may also carry ``clickhouse_url`` and ``database`` for the store.
        """
        env = os.environ if env is None else env
        flags = {key: value for key, value in (flags or {}).items() if value is not None}
        problems: list[str] = []
        values: dict[str, object] = {}
        file_store: dict[str, object] = {}
        flag_store: dict[str, object] = {}
        file_path = config_file or (Path(env[ENV_CONFIG_FILE]) if env.get(ENV_CONFIG_FILE) else None)
        if file_path is not None:
            for key, raw in _read_file(file_path, problems).items():
                if key in _STORE_KEYS:
                    file_store[_STORE_KEYS[key]] = _store_value(key, raw, str(file_path), problems)
                elif key in _BY_NAME:
                    values[key] = _parse(_BY_NAME[key], raw, str(file_path), problems)
                else:
                    problems.append(f"{file_path}: unknown setting {key!r}")
        for setting in SETTINGS:
            raw_env = env.get(setting.env)
            if raw_env is not None and raw_env != "":
                values[setting.name] = _parse(setting, raw_env, setting.env, problems)
            if setting.name in flags:
                values[setting.name] = _parse(setting, flags[setting.name], setting.flag, problems)
        for key in ("clickhouse_url", "database"):
            if key in flags:
                flag_store[_STORE_KEYS[key]] = flags[key]
        try:
            store = StoreConfig.resolve(env, file_store, flag_store)
        except ConfigError as exc:
            problems.extend(exc.problems)
            store = None
        if values.get("data_dir") is None:
            values["data_dir"] = default_data_dir(env)
        values = {key: value for key, value in values.items() if value is not None}
        if store is None:
            raise ConfigError(problems)
        config = cls(store=store, **values)  # type: ignore[arg-type]
        problems.extend(config.problems())
        if problems:
            raise ConfigError(problems)
        return config

    def problems(self) -> list[str]:
        """Everything wrong with this configuration (empty when it is valid)."""
        problems: list[str] = []
        endpoints = [("grpc_endpoint", self.grpc_endpoint), ("http_endpoint", self.http_endpoint)]
        for name, endpoint in endpoints:
            if endpoint and _split_endpoint(endpoint) is None:
                problems.append(f"{name} {endpoint!r} must be host:port")
        if self.serves_store:
            address = _split_endpoint(self.clickhouse_http_endpoint)
            if address is None:
                problems.append(
                    f"clickhouse_http_endpoint {self.clickhouse_http_endpoint!r} must be host:port on loopback"
                )
            elif not _is_loopback(address[0]):
                problems.append(
                    f"clickhouse_http_endpoint {self.clickhouse_http_endpoint!r} must be a loopback address "
                    "(127.0.0.1 or ::1): the embedded store is served to this machine only"
                )
        for name in ("clickhouse_http_password", "clickhouse_http_readonly_password"):
            value: str | None = getattr(self, name)
            if value is not None and not value.strip():
                problems.append(f"{name} is empty")
        if (
            self.clickhouse_http_password is not None
            and self.clickhouse_http_password == self.clickhouse_http_readonly_password
        ):
            problems.append("clickhouse_http_password and clickhouse_http_readonly_password must differ")
        if not self.grpc_endpoint and not self.http_endpoint:
            problems.append("grpc_endpoint and http_endpoint are both empty: nothing would receive spans")
        for name in (
            "spool_segment_bytes",
            "max_request_bytes",
            "max_concurrent_requests",
            "batch_max_spans",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.spool_max_bytes < 2 * self.spool_segment_bytes:
            problems.append("spool_max_bytes must be at least twice spool_segment_bytes")
        if self.spool_max_bytes < 2 * self.max_request_bytes:
            problems.append("spool_max_bytes must be at least twice max_request_bytes")
        if self.batch_max_bytes < self.max_request_bytes:
            problems.append("batch_max_bytes must be at least max_request_bytes (one request fits a batch)")
        if not 0 < self.retry_initial_seconds <= self.retry_max_seconds:
            problems.append("retry_initial_seconds must be > 0 and <= retry_max_seconds")
        if self.shutdown_timeout_seconds < 0:
            problems.append("shutdown_timeout_seconds must be >= 0")
        if self.batch_linger_seconds < 0:
            problems.append("batch_linger_seconds must be >= 0")
        if self.auth_token is not None and self.auth_token_file is not None:
            problems.append("set auth_token or auth_token_file, not both")
        if self.auth_token is not None and not self.auth_token.strip():
            problems.append("auth_token is empty")
        if self.auth_token_file is not None and not self.auth_token_file.is_file():
            problems.append(f"auth_token_file {self.auth_token_file} does not exist")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("TLS needs both tls_cert_file and tls_key_file")
        for name in ("tls_cert_file", "tls_key_file"):
            path: Path | None = getattr(self, name)
            if path is not None and not path.is_file():
                problems.append(f"{name} {path} does not exist")
        return problems

    @property
    def serves_store(self) -> bool:
        """Whether this collector serves its (embedded) store over ClickHouse's HTTP interface."""
        return self.store.embedded and self.query_server and bool(self.clickhouse_http_endpoint)

    def endpoint(self, which: Literal["grpc", "http"]) -> tuple[str, int] | None:
        """(host, port) to listen on, or ``None`` when that receiver is disabled."""
        endpoint = self.grpc_endpoint if which == "grpc" else self.http_endpoint
        return _split_endpoint(endpoint) if endpoint else None

    def bearer_token(self) -> str | None:
        """The token clients must present, read from ``auth_token_file`` when that is set."""
        if self.auth_token_file is not None:
            return self.auth_token_file.read_text(encoding="utf-8").strip() or None
        return self.auth_token

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def dead_letter_dir(self) -> Path:
        """Where what the store refuses for its content is kept (every signal's)."""
        return self.data_dir / "dead-letters"

    def signal_spool_dir(self, signal: Signal) -> Path:
        """Each signal's spool (traces: :attr:`spool_dir`)."""
        return self.data_dir / signal.spool_name


def _settings() -> tuple[Setting, ...]:
    settings: list[Setting] = []
    for item in dataclasses.fields(CollectorConfig):
        about = item.metadata.get(_SETTING)
        if isinstance(about, _About):
            default = None if item.default is dataclasses.MISSING else item.default
            settings.append(
                Setting(item.name, about.kind, default, about.help, about.choices, about.default_text)
            )
    return tuple(settings)


SETTINGS: Final[tuple[Setting, ...]] = _settings()
"""Every setting, in the order of :class:`CollectorConfig`'s fields, with the default written there."""
_BY_NAME: Final = {setting.name: setting for setting in SETTINGS}


def _read_file(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        problems.append(f"cannot read the config file {path}: {exc.strerror or exc}")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"config file {path} is not valid TOML: {exc}")
        return {}
    table = document.get("collector", document)
    if not isinstance(table, dict):
        problems.append(f"config file {path}: [collector] must be a table")
        return {}
    return dict(table)  # pyright: ignore[reportUnknownArgumentType]
