"""Structured log lines (logfmt or JSON) for the collector process."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Final, Literal

__all__ = ["configure_logging"]

_BARE: Final = re.compile(r"^[A-Za-z0-9_.:/@+\-]+$")


def _logfmt_value(value: str) -> str:
    return value if _BARE.match(value) else json.dumps(value, ensure_ascii=False)


class _StructuredFormatter(logging.Formatter):
    def __init__(self, style: Literal["logfmt", "json"]) -> None:
        super().__init__()
        self._format = style

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, str] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        if self._format == "json":
            return json.dumps(fields, ensure_ascii=False)
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


def configure_logging(style: Literal["logfmt", "json"], level: str) -> None:
    """Send every ``llmledger`` log record to stderr in ``style``, at ``level`` and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StructuredFormatter(style))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("llmledger").setLevel(level.upper())
    # clickhouse-connect logs a traceback for every value it cannot encode, on every attempt
    # of a refused piece; the drain reports those refusals itself, once per batch, with the cause.
    logging.getLogger("clickhouse_connect.driver.transform").setLevel(logging.CRITICAL)
