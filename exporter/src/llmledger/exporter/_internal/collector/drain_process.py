"""The drain process: stages 3 to 5 of the pipeline (:mod:`.pipeline`), in a process of its own.

The receiving process acknowledges requests only after the spool has them; this process
claims spooled batches and inserts them, owns the store and, for an embedded store,
serves it over ClickHouse's HTTP interface. Building rows and the store's client hold the
GIL in stretches of tens of milliseconds, so keeping them out of the receiving process is
what keeps acknowledgement latency low.

The two talk in typed messages, one JSON line each (:mod:`.messages`): the receiving
process writes :class:`.messages.DrainStart` (the configuration) on stdin, later a
:class:`.messages.StopRequest`; this process writes a :class:`.messages.DrainStatus` on
stdout every ``STATUS_INTERVAL`` seconds and, on exit, a last status and a
:class:`.messages.DrainExited`. End of stdin means the parent is gone: stop at once (on
Linux the kernel also kills this process when the parent dies, via ``PR_SET_PDEATHSIG``).

:class:`DrainProcess` is the receiving process's end: it starts this process, keeps its
latest status, and restarts from the counters it had.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import IO, Final

from llmledger.exporter._internal.errors import OUTSIDE_FAILURES, contain

from .clickhouse_http import ClickHouseHttpServer
from .config import CollectorConfig
from .drain import SpoolDrain
from .log_format import configure_logging
from .messages import (
    DrainExited,
    DrainStart,
    DrainStatus,
    MessageError,
    Report,
    StopRequest,
    decode_command,
    decode_report,
    encode,
)
from .metrics import CollectorMetrics
from .pipeline import drain, report_status

__all__ = ["DrainProcess", "main", "read_configuration"]

_logger = logging.getLogger("llmledger.collector.drain")

STATUS_INTERVAL: Final = 0.25
DRAIN_NICENESS: Final = 5
# Not ``-m`` on this module: the package imports it, and runpy warns about running it twice.
_CHILD_MAIN: Final = (
    "import sys; from llmledger.exporter._internal.collector.drain_process import main; sys.exit(main())"
)
_PR_SET_PDEATHSIG: Final = 1
_SHOWN: Final = 200  # characters of an unreadable line that a log line quotes


def _die_with_parent(parent: int) -> None:
    library = ctypes.util.find_library("c")
    if library is not None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(library, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


# -- the drain process -----------------------------------------------------------------------


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
    out = sys.stdout
    try:
        config = read_configuration(sys.stdin)
    except MessageError as exc:
        # The parent and this process disagree on the protocol (two versions installed at
        # once?): said in the exit message, which the parent logs, and the exit code.
        _send(out, DrainExited(drained=False, error=f"no configuration from the collector process: {exc}"))
        return 2
    configure_logging(config.log_format, config.log_level)
    try:
        return _serve(config, out)
    except Exception as exc:
        # Said in the exit message first, so the parent's "drain process exited" line names it
        # whether this process then exits with code 1 or, under our tests, with the bug raised.
        _send(out, DrainExited(drained=False, error=f"{type(exc).__name__}: {exc}"))
        contain("the drain process", exc)  # a bug of ours is logged there, with its traceback
        if isinstance(exc, OUTSIDE_FAILURES):  # the disk's or the store's: said here
            _logger.exception("the drain process stopped")
        return 1


def read_configuration(commands: IO[str]) -> CollectorConfig:
    """The configuration, the parent's first message; :class:`.messages.MessageError` for anything else."""
    start = decode_command(commands.readline())
    if not isinstance(start, DrainStart):
        raise MessageError(f"the first message is a {type(start).__name__}, not the configuration")
    return start.config


def _serve(config: CollectorConfig, out: IO[str]) -> int:
    """Drain every spool and serve the store until the parent says stop; the exit code."""
    metrics = CollectorMetrics()
    drains = drain(config, metrics)
    drains.start()
    query, query_error = _start_query_server(config, drains.traces, metrics)
    query_port = None if query is None else query.port
    stop = _StopListener(sys.stdin)
    code = 0
    while not stop.requested.is_set():
        _send(out, report_status(drains, metrics, query_port, query_error))
        if drains.failed:
            code = 1
            break
        stop.requested.wait(STATUS_INTERVAL)
    drained = drains.stop(stop.seconds)
    if query is not None:
        query.stop()
    _send(out, report_status(drains, metrics, query_port, query_error))
    _send(out, DrainExited(drained=drained))
    drains.close()
    return code


class _StopListener:
    """The parent's commands, read on a thread: a :class:`.messages.StopRequest`, or the end of stdin."""

    def __init__(self, commands: Iterable[str]) -> None:
        self.requested = threading.Event()
        self.seconds = 0.0  # how long to drain once stopped (the parent gone: not at all)
        self._commands = commands
        threading.Thread(target=self._read, name="llmledger-drain-commands", daemon=True).start()

    def _read(self) -> None:
        for line in self._commands:
            try:
                command = decode_command(line)
            except MessageError as exc:
                _logger.error(
                    "ignored an unreadable command from the collector process (%s): %.200r", exc, line
                )
                continue
            if isinstance(command, StopRequest):
                self.seconds = command.seconds
                break
            _logger.error("ignored an unexpected %s from the collector process", type(command).__name__)
        self.requested.set()


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
        # A bug of ours is counted as one (raised under our tests) and otherwise handled alike.
        contain("the drain process starting the ClickHouse HTTP interface", exc)
        metrics.add("store_errors")
        error = f"the ClickHouse HTTP interface for {config.store.display_url} cannot start: {exc}"
        _logger.error("%s; reads through the collector are off until it restarts", error)
        return None, error
    return query, None


def _send(out: IO[str], message: Report) -> None:
    try:
        out.write(encode(message) + "\n")
        out.flush()
    except (BrokenPipeError, ValueError):
        pass


# -- the receiving process's end -------------------------------------------------------------


class DrainProcess:
    """The receiving process's handle on the drain process: start it, read its status, stop it."""

    def __init__(self, config: CollectorConfig, store_socket: socket.socket | None = None) -> None:
        self._config = config
        self._store_socket = store_socket
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.status: DrainStatus | None = None  # the latest; ``None`` until this process's first
        self.exited: DrainExited | None = None
        self.restarts = 0
        self._carried: dict[str, int] = {}
        # The spool's committed totals when this collector's first drain process opened it,
        # and the latest totals seen: their difference is exact across drain restarts.
        self._durable_base: Mapping[str, int] | None = None
        self._durable: Mapping[str, int] = {}
        self.started_at = time.monotonic()
        self.status_at = self.started_at  # when the last status line arrived (liveness)

    @property
    def fatal_error(self) -> str | None:
        """Why the drain process stopped, or the error one of its drains stopped on."""
        if self.exited is not None and self.exited.error:
            return self.exited.error
        return None if self.status is None else self.status.fatal_error

    def counters(self) -> dict[str, int]:
        """The drain's counters, those of earlier (restarted) drain processes included.

        Counters that the drain commits with the spool's cursor (spans written and
        dead-lettered) come from those totals, not from the last status a process sent
        before it died: a batch committed after that status would be missing otherwise.
        """
        current: Mapping[str, int] = {} if self.status is None else self.status.counters
        counters = {
            name: self._carried.get(name, 0) + current.get(name, 0) for name in {*self._carried, *current}
        }
        base = self._durable_base or {}
        for name, value in self._durable.items():
            counters[name] = value - base.get(name, 0)
        return counters

    def start(self) -> None:
        self._carried = self.counters()  # counters never go backwards across a restart
        self.status = None
        self.exited = None
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
        self._process.stdin.write(encode(DrainStart(self._config)) + "\n")
        self._process.stdin.flush()
        self._reader = threading.Thread(target=self._read_reports, args=(self._process,), daemon=True)
        self._reader.start()

    def _read_reports(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                report = decode_report(line)
            except MessageError as exc:
                # Nothing but the drain writes there; the last good status stands, and a drain
                # that stops reporting fails /healthz after STALLED_DRAIN_SECONDS.
                _logger.warning("ignored an unreadable line from the drain process (%s): %.200r", exc, line)
                continue
            if isinstance(report, DrainExited):
                self.exited = report
                continue
            if self._durable_base is None:
                self._durable_base = report.durable_counters_at_open
            self._durable = report.durable_counters
            self.status = report
            self.status_at = time.monotonic()

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
                process.stdin.write(encode(StopRequest(timeout)) + "\n")
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
        return self.exited is not None and self.exited.drained


if __name__ == "__main__":
    sys.exit(main())
