"""The drain in a process of its own: the store, the spool reader and the query server live here.

The receiving process acknowledges requests only after the spool has them; this process
turns spooled requests into rows and inserts them. Row building is long pure-Python work
and the store's client holds the GIL in stretches of tens of milliseconds, so keeping it
out of the receiving process is what keeps acknowledgement latency low.

Protocol with the parent, one JSON object per line: the parent writes the configuration
on stdin, then ``{"stop": seconds}`` to ask for a graceful stop (drain for at most that
long); this process writes a status object on stdout every ``STATUS_INTERVAL`` seconds
and once more on exit. End of stdin means the parent is gone: stop at once (on Linux the
kernel also kills this process when the parent dies, via ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any, Final

from .clickhouse_http import ClickHouseHttpServer
from .config import CollectorConfig
from .drain import SpoolDrain
from .log_format import configure_logging
from .metrics import CollectorMetrics
from .otlp_signals import Signal
from .signal_drain import SignalDrain
from .spool import SpoolReader

__all__ = ["DrainProcess", "main"]

_logger = logging.getLogger("llmledger.collector.drain")

STATUS_INTERVAL: Final = 0.25
DRAIN_NICENESS: Final = 5
# Not ``-m`` on this module: the package imports it, and runpy warns about running it twice.
_CHILD_MAIN: Final = (
    "import sys; from llmledger.exporter._internal.collector.drain_process import main; sys.exit(main())"
)
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent(parent: int) -> None:
    library = ctypes.util.find_library("c")
    if library is not None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(library, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _status(
    drain: SpoolDrain,
    reader: SpoolReader,
    signals: Sequence[SignalDrain],
    metrics: CollectorMetrics,
    query: ClickHouseHttpServer | None,
    query_error: str | None = None,
) -> dict[str, Any]:
    # Spool figures cover every signal's spool; errors name the signal they come from.
    readers = [reader, *(other.reader for other in signals)]
    fatal = [f"{other.signal.value}: {other.fatal_error}" for other in signals if other.fatal_error]
    if drain.fatal_error is not None:
        fatal.insert(0, str(drain.fatal_error))
    errors = [f"{other.signal.value}: {other.last_error}" for other in signals if other.last_error]
    if drain.last_error:
        errors.insert(0, drain.last_error)
    inserting_since = drain.inserting_since
    return {
        "counters": metrics.snapshot(),
        # Committed with the spool's cursor: the parent counts these from them, exactly,
        # whatever drain process died before it could report (see DrainProcess.counters).
        "durable_counters": _merged(r.totals for r in readers),
        "durable_counters_at_open": _merged(r.totals_at_open for r in readers),
        "insert_seconds": 0.0 if inserting_since is None else time.monotonic() - inserting_since,
        "spool_damaged_bytes": sum(r.skipped_bytes for r in readers),
        "pending_bytes": sum(r.pending_bytes() for r in readers),
        "lag_seconds": max(r.lag_seconds if r.has_data() else 0.0 for r in readers),
        "store_up": drain.store_connected and not any(other.last_error for other in signals),
        "last_error": "; ".join(errors) or None,
        "fatal_error": "; ".join(fatal) or None,
        "query_port": None if query is None else query.port,
        "query_error": query_error,
    }


def _merged(totals: Iterable[Mapping[str, int]]) -> dict[str, int]:
    # Each signal's spool commits counters of its own names ("written_spans", "written_data_points" …).
    merged: dict[str, int] = {}
    for one in totals:
        merged.update(one)
    return merged


def main() -> int:
    """Entry point of the drain process.

    ``sys.argv[1]`` is the parent's process id; ``sys.argv[2]``, when present, the file
    descriptor of the listening socket on which to serve the store's ClickHouse HTTP
    interface (the parent binds it, so the port stays ours across drain restarts).
    """
    _die_with_parent(int(sys.argv[1]))
    # Background work: when both want the CPU, acknowledging requests comes first.
    os.nice(DRAIN_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    config = CollectorConfig.from_json(sys.stdin.readline())
    configure_logging(config.log_format, config.log_level)
    out = sys.stdout
    try:
        return _serve(config, out)
    except Exception as exc:
        # Said in the status line too, so the parent's "drain process exited" line names it.
        _logger.exception("the drain process stopped")
        _send(out, {"fatal_error": f"{type(exc).__name__}: {exc}", "exited": True})
        return 1


def _serve(config: CollectorConfig, out: IO[str]) -> int:
    """Drain every spool and serve the store until the parent says stop; the exit code."""
    metrics = CollectorMetrics()
    reader = SpoolReader(config.spool_dir)
    drain = SpoolDrain(
        reader,
        config.store,
        metrics,
        dead_letter_dir=config.data_dir / "dead-letters",
        batch_max_spans=config.batch_max_spans,
        batch_max_bytes=config.batch_max_bytes,
        retry_initial_seconds=config.retry_initial_seconds,
        retry_max_seconds=config.retry_max_seconds,
        unexplained_error_seconds=config.unexplained_error_seconds,
        batch_linger_seconds=config.batch_linger_seconds,
        apply_schema=config.apply_schema,
        native_insert_file=config.data_dir / "native-batch.pb" if config.native_insert else None,
    )
    signals = [
        SignalDrain(
            kind,
            SpoolReader(config.signal_spool_dir(kind)),
            drain,
            metrics,
            dead_letter_dir=config.data_dir / "dead-letters",
            batch_max_items=config.batch_max_spans,
            batch_max_bytes=config.batch_max_bytes,
            retry_initial_seconds=config.retry_initial_seconds,
            retry_max_seconds=config.retry_max_seconds,
            batch_linger_seconds=config.batch_linger_seconds,
        )
        for kind in (Signal.METRICS, Signal.LOGS)
    ]
    drain.start()
    for signal_drain in signals:
        signal_drain.start()
    query, query_error = _start_query_server(config, drain, metrics)
    stop_after: list[float] = []

    def read_commands() -> None:
        for line in sys.stdin:
            try:
                command = json.loads(line)
            except ValueError:
                continue
            if isinstance(command, dict) and "stop" in command:
                stop_after.append(float(command["stop"]))  # pyright: ignore[reportUnknownArgumentType]
                return
        stop_after.append(0.0)  # the parent is gone

    threading.Thread(target=read_commands, name="llmledger-drain-commands", daemon=True).start()
    code = 0
    while not stop_after:
        _send(out, _status(drain, reader, signals, metrics, query, query_error))
        if drain.fatal_error is not None or any(other.fatal_error for other in signals):
            code = 1
            break
        time.sleep(STATUS_INTERVAL)
    # The metrics and logs drains write through the traces drain's connection: stop them first.
    deadline = time.monotonic() + (stop_after[0] if stop_after else 0.0)
    drained = all([other.stop(max(0.0, deadline - time.monotonic())) for other in signals])
    drained = drain.stop(max(0.0, deadline - time.monotonic())) and drained
    if query is not None:
        query.stop()
    status = _status(drain, reader, signals, metrics, query, query_error)
    status["exited"] = True
    status["drained"] = drained
    _send(out, status)
    reader.close()
    for signal_drain in signals:
        signal_drain.reader.close()
    return code


def _start_query_server(
    config: CollectorConfig, drain: SpoolDrain, metrics: CollectorMetrics
) -> tuple[ClickHouseHttpServer | None, str | None]:
    """The embedded store's ClickHouse HTTP interface (``None`` when off), or why it cannot start.

    The parent binds the listening socket (so a taken port is a start-up error there) and
    passes it as ``sys.argv[2]``. A server that still cannot start is the store's condition,
    reported and counted like a failed insert: exiting would only have the parent restart
    this process into the same error, forever, while the drain itself can keep retrying the
    store and report why it fails.
    """
    store_path = config.store.embedded_path
    if len(sys.argv) <= 2 or store_path is None:
        return None, None
    try:
        query = ClickHouseHttpServer(
            socket.socket(fileno=int(sys.argv[2])),
            os.path.realpath(store_path),
            admin_password=config.clickhouse_http_password or "",
            readonly_password=config.clickhouse_http_readonly_password or "",
            engine_open=drain.engine_open,
        )
        query.start()
    except Exception as exc:
        metrics.add("store_errors")
        error = f"the ClickHouse HTTP interface for {config.store.display_url} cannot start: {exc}"
        _logger.error("%s; reads through the collector are off until it restarts", error)
        return None, error
    return query, None


def _send(out: IO[str], status: Mapping[str, Any]) -> None:
    try:
        out.write(json.dumps(status) + "\n")
        out.flush()
    except (BrokenPipeError, ValueError):
        pass


class DrainProcess:
    """The parent's handle on the drain process: start it, read its status, stop it."""

    def __init__(self, config: CollectorConfig, store_socket: socket.socket | None = None) -> None:
        self._config = config
        self._store_socket = store_socket
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.status: dict[str, Any] = {}
        self.restarts = 0
        self._carried: dict[str, int] = {}
        # The spool's committed totals when this collector's first drain process opened it,
        # and the latest totals seen: their difference is exact across drain restarts.
        self._durable_base: dict[str, int] | None = None
        self._durable: dict[str, int] = {}
        self.started_at = time.monotonic()
        self.status_at = self.started_at  # when the last status line arrived (liveness)

    def counters(self) -> dict[str, int]:
        """The drain's counters, those of earlier (restarted) drain processes included.

        Counters that the drain commits with the spool's cursor (spans written and
        dead-lettered) come from those totals, not from the last status a process sent
        before it died: a batch committed after that status would be missing otherwise.
        """
        current: Mapping[str, int] = self.status.get("counters") or {}
        counters = {
            name: self._carried.get(name, 0) + current.get(name, 0) for name in {*self._carried, *current}
        }
        base = self._durable_base or {}
        for name, value in self._durable.items():
            counters[name] = value - base.get(name, 0)
        return counters

    def start(self) -> None:
        self._carried = self.counters()  # counters never go backwards across a restart
        self.status = {}
        self.started_at = self.status_at = time.monotonic()
        fds = () if self._store_socket is None else (self._store_socket.fileno(),)
        self._process = subprocess.Popen(  # noqa: S603  (our own module, our own interpreter)
            [sys.executable, "-c", _CHILD_MAIN, str(os.getpid()), *map(str, fds)],
            pass_fds=fds,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._process.stdin is not None
        self._process.stdin.write(self._config.to_json() + "\n")
        self._process.stdin.flush()
        self._reader = threading.Thread(target=self._read_status, args=(self._process,), daemon=True)
        self._reader.start()

    def _read_status(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                status = json.loads(line)
                if self._durable_base is None and "durable_counters_at_open" in status:
                    self._durable_base = dict(status["durable_counters_at_open"] or {})
                self._durable = dict(status.get("durable_counters") or self._durable)
                self.status = status
                self.status_at = time.monotonic()
            except (ValueError, AttributeError, TypeError):
                _logger.debug("unreadable status line from the drain process: %r", line)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def exit_code(self) -> int | None:
        """``None`` while it runs."""
        return None if self._process is None else self._process.poll()

    def stop(self, timeout: float) -> bool:
        """Ask for a graceful stop (drain for up to ``timeout`` s); return whether the spool was emptied."""
        process = self._process
        if process is None:
            return True
        if process.poll() is None and process.stdin is not None:
            try:
                process.stdin.write(json.dumps({"stop": timeout}) + "\n")
                process.stdin.flush()
                process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        try:
            process.wait(timeout + 15)
        except subprocess.TimeoutExpired:
            _logger.error("the drain process did not stop in time; killing it (the spool keeps its data)")
            process.kill()
            process.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        return bool(self.status.get("drained"))


if __name__ == "__main__":
    sys.exit(main())
