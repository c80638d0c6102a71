"""Spooled OTLP bytes into ``otel_traces`` with the embedded engine doing the decoding.

Reading a protobuf field in Python costs a Python-level call per value (~25 µs a span of
20 attributes, however the fields are read); the engine reads the spooled
``ExportTraceServiceRequest`` bytes itself (``FORMAT Protobuf`` with a trimmed copy of the
OTLP schema, ``otlp_trace.proto``) and renders the rows several times faster. The statement
is SQL in its own file, ``otel_traces_from_otlp.sql``, which says how each value is
rendered so that the rows are byte for byte those of :class:`~llmledger.exporter._internal.rows.SpanRows`.
A batch holding what that SQL does not render, or what the engine's protobuf reader
rejects (see ``_ENGINE_DECODER``), makes the statement fail before anything is written, and
goes through ``SpanRows``; ``tests/collector`` checks both give identical rows, and that a
batch is refused exactly when it holds one of those.

Costs, per 50,000-span statement on one core: the engine decodes the protobuf in ~4 µs a
span, and planning the statement takes ~80 ms whatever its size.

The statement reads a file, so this path serves an embedded store (the file is local to
the engine); a ClickHouse server gets ``SpanRows``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Final

from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client

from llmledger.exporter._internal.native_block import varint
from llmledger.exporter._internal.store import run_command
from llmledger.exporter._internal.writer import deferred_index_settings

__all__ = ["READ_BLOCK_BYTES", "NativeInsert"]

# Decoded columns per read block; see NativeInsert.
READ_BLOCK_BYTES: Final = 16 << 20

# The message of otel_traces_from_otlp.sql's throwIf: a value it does not render.
_UNSUPPORTED: Final = "llmledger: a value the native insert does not render"
# In the message of an error the engine's protobuf reader raised. The receiver accepted the
# request with a full protobuf parse, so it is valid protobuf, but the engine's reader is
# stricter: an AnyValue carrying two members of its oneof (protobuf keeps the last), or a
# bool encoded as 2. Such a batch goes through SpanRows like one the SQL does not render,
# instead of failing the native path (three failures would turn it off for every batch).
_ENGINE_DECODER: Final = "ProtobufRowInputFormat"


# The statement's SQL and the protobuf schema it reads with, beside this module.
_FILES: Final = resources.files("llmledger.exporter._internal.collector")


def _sql_file(name: str) -> str:
    return _FILES.joinpath(name).read_text(encoding="utf-8")


def insert_statement(database: str) -> str:
    """``otel_traces_from_otlp.sql`` for ``database``; the file path is bound.

    Substituted: the database identifier, and the fixed type of an attribute list
    (``otlp_attribute_list.sql``), which the statement reads four times.
    """
    # The type stands inside the statement's quoted structure string, where a comment would not be one.
    attribute_list = "\n".join(
        line for line in _sql_file("otlp_attribute_list.sql").splitlines() if not line.startswith("--")
    )
    return Template(_sql_file("otel_traces_from_otlp.sql")).substitute(
        db=quote_identifier(database), attribute_list=attribute_list
    )


class NativeInsert:
    """Inserts spooled requests by letting the embedded engine decode them (see the module doc)."""

    def __init__(
        self, client: Client, database: str, scratch: Path, *, read_block_bytes: int = READ_BLOCK_BYTES
    ) -> None:
        self._client = client
        self._insert = insert_statement(database)
        # The batch the engine reads is a file only in name: in memory where the platform
        # allows (an anonymous memfd the engine, in this process, opens by /proc path), so
        # writing it neither reaches the disk nor holds up the spool's fsync (on ext4 an
        # fsync also flushes other files' pending data, and a batch is up to 128 MiB).
        self._memfd: int | None = None
        if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
            self._memfd = os.memfd_create("llmledger-native-batch", os.MFD_CLOEXEC)
            scratch = Path(f"/proc/self/fd/{self._memfd}")
        self._scratch = scratch
        schema = _FILES.joinpath("otlp_trace.proto")
        self._settings: dict[str, object] = {
            "format_schema": f"{schema}:ExportTraceServiceRequest",
            "input_format_protobuf_oneof_presence": 1,
            "max_threads": 1,
            "max_insert_threads": 1,
            # The file is decoded a few requests at a time (decoded columns are ~15 times the
            # protobuf bytes: 1.1 GB for 100,000 spans read as one block, 350 MB this way)...
            "input_format_max_block_size_bytes": read_block_bytes,
            "max_block_size": 10_000_000,  # (not per row count: ARRAY JOIN would cut its output)
            # ...and the rows are gathered into one block before anything is written: the
            # statement writes one part or, when it fails (throwIf), nothing; and a replayed
            # batch forms the very same block, so its deduplication token matches.
            "min_insert_block_size_rows": 1 << 40,
            "min_insert_block_size_bytes": 1 << 50,
            # Format a double only for double values, not for every attribute value.
            "short_circuit_function_evaluation": "force_enable",
            # The attribute bloom filters are built at a part's first merge (see writer).
            **deferred_index_settings(),
        }

    def _write_scratch(self, payloads: Sequence[bytes | memoryview]) -> None:
        # ``Protobuf`` input is a sequence of length-delimited messages.
        parts = (part for payload in payloads for part in (varint(len(payload)), payload))
        if self._memfd is None:
            with open(self._scratch, "wb") as file:
                file.writelines(parts)
            return
        os.ftruncate(self._memfd, 0)
        with open(self._memfd, "wb", closefd=False) as file:
            file.seek(0)
            file.writelines(parts)

    def close(self) -> None:
        """Free the in-memory batch file (the engine client is not ours to close)."""
        if self._memfd is not None:
            os.close(self._memfd)
            self._memfd = None

    def write(self, payloads: Sequence[bytes | memoryview], dedup_token: str) -> bool:
        """Insert the requests natively; ``False`` (nothing written) when they hold spans only ``SpanRows`` renders."""
        self._write_scratch(payloads)
        try:
            run_command(
                self._client,
                self._insert,
                parameters={"path": str(self._scratch)},
                settings={**self._settings, "insert_deduplication_token": dedup_token},
            )
        except Exception as exc:
            message = str(exc)
            if _UNSUPPORTED in message or _ENGINE_DECODER in message:
                return False
            raise
        finally:
            if self._memfd is not None:
                os.ftruncate(self._memfd, 0)  # between batches the drain holds no batch
        return True
