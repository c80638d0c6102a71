"""The collector's receiving process: stages 1 and 2 of the pipeline (:mod:`.pipeline`), and its lifecycle.

Start: open the spool (recovering what a crash left), start the drain process (which opens
the store, applies the schema and, for the embedded store, serves queries), then the two
receivers. The drain process is restarted if it dies. Stop (SIGTERM, SIGINT): stop
receiving, let the drain work for up to ``shutdown_timeout_seconds``, keep whatever is
left in the spool for the next start.

The bound ports and process id are written to ``<data_dir>/collector.json`` once the
receivers listen, so tools and tests can find a collector started on port 0.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from types import FrameType

import grpc

from llmledger.exporter._internal.store import store_lock_holder
from llmledger.exporter._internal.store_owner import StoreOwned, StoreOwnership

from .config import CollectorConfig
from .drain_process import DrainProcess
from .grpc_receiver import start_grpc_server
from .http_receiver import OtlpHttpServer
from .ingest import Ingest
from .messages import DrainStatus
from .metrics import CollectorMetrics
from .pipeline import Spools, open_spools, receive
from .spool import SpoolError

__all__ = ["Collector", "CollectorStartError"]

_logger = logging.getLogger("llmledger.collector")
_MAX_RESTART_DELAY = 30.0
# A drain process that ran this long before it died starts the restart back-off over.
_RESTART_DELAY_RESET = 60.0
# Liveness: the drain process is stuck when it sends no status for this long (it sends one
# every 0.25 s; frozen, e.g. SIGSTOP, or wedged), or when one insert has not returned for
# STUCK_INSERT_SECONDS (the largest batches take seconds). docs/collector.md says so.
STALLED_DRAIN_SECONDS = 10.0
STUCK_INSERT_SECONDS = 120.0
# Readiness: a spool write that failed this recently, with nothing written since, means
# the next request would be refused too.
_SPOOL_FAILURE_SECONDS = 10.0


class CollectorStartError(RuntimeError):
    """The collector cannot start; ``problems`` has one line per reason, all of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _store_address(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    return ("127.0.0.1" if host == "localhost" else host), int(port)


def _port_taken(address: tuple[str, int]) -> bool:
    """Whether something already listens on ``address`` (checked when another problem stops the start)."""
    host, port = address
    if port == 0:
        return False
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host if host != "0.0.0.0" else "127.0.0.1", port)) == 0  # noqa: S104


class Collector:
    """One collector's parts (see the module doc)."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.metrics = CollectorMetrics()
        self._stop_requested = threading.Event()
        self._spools: Spools | None = None
        self._drain: DrainProcess | None = None
        self._ingest: Ingest | None = None
        self._http: OtlpHttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: grpc.Server | None = None
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._ownership: StoreOwnership | None = None
        self._store_socket: socket.socket | None = None
        self._store_address: str | None = None
        self._tls_pair: tuple[bytes, bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Check everything that can stop a start, report every problem at once, then serve.

        Raises :class:`CollectorStartError` (nothing left running) when the data directory is
        not writable, the embedded extra is missing, another process owns the store, or a
        port is taken.
        """
        config = self.config
        problems = self._preflight()
        if not problems:
            try:
                self._spools = open_spools(config)
            except SpoolError as exc:
                problems.append(str(exc))
        if self._spools is not None:
            self._ingest = receive(config, self._spools, self.metrics)
            problems += self._bind(self._ingest)
        if problems:
            self._release()
            raise CollectorStartError(problems)
        assert self._spools is not None
        config = self._advertise(config)
        self._drain = DrainProcess(config, self._store_socket)
        self._drain.start()
        self._register_gauges(self._spools, self._drain)
        self._serve_receivers()
        self._write_state()
        _logger.info(
            "collector ready: otlp grpc %s, otlp http %s, store %s%s, spool %s (fsync %s)",
            f"port {self.grpc_port}" if self.grpc_port else "off",
            f"port {self.http_port}" if self.http_port else "off",
            config.store.display_url,
            f" (served at http://{self._store_address})" if self._store_address else "",
            config.spool_dir,
            config.fsync,
        )

    def _preflight(self) -> list[str]:
        """What would stop this collector, found before anything starts (one line each)."""
        config = self.config
        problems: list[str] = []
        try:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            probe = config.data_dir / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            problems.append(
                f"the data directory {config.data_dir} is not writable ({exc.strerror or exc}); "
                "choose another with --data-dir / LLMLEDGER_COLLECTOR_DATA_DIR"
            )
        path = config.store.embedded_path
        if path is None:
            return problems
        if importlib.util.find_spec("chdb") is None:
            problems.append(
                "the embedded store needs chDB, which is not installed: install the exporter with its "
                "embedded extra (pip install './exporter[embedded]' from a checkout), or set "
                "LLMLEDGER_CLICKHOUSE_URL to a ClickHouse server"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # Not fatal: the spool takes spans, and the drain reports (and counts) why it cannot
            # write them, until the location is fixed and the collector restarted.
            _logger.error(
                "the embedded store %s cannot be created (%s); spans are spooled, not written",
                path,
                exc.strerror or exc,
            )
            return problems
        ownership = StoreOwnership(path)
        try:
            ownership.acquire()
        except StoreOwned as exc:
            problems.append(
                f"{exc}; stop it first, or use it: every llmledger command reaches the store through it"
            )
            return problems
        except OSError as exc:
            problems.append(f"cannot lock the embedded store {path}: {exc.strerror or exc}")
            return problems
        self._ownership = ownership
        locked, holder = store_lock_holder(path)
        if locked:
            # Not fatal: requests are spooled, and written once the other process lets go.
            _logger.warning(
                "the embedded store %s is open in another process%s; spans are spooled until it lets go",
                path,
                f" ({holder})" if holder else "",
            )
        return problems

    def _bind(self, ingest: Ingest) -> list[str]:
        """Bind every listening port (serving starts later); a taken port is a problem naming its setting."""
        config = self.config
        problems: list[str] = []

        def taken(setting: str, address: str, reason: object) -> str:
            flags = f"--{setting.replace('_', '-')} / LLMLEDGER_COLLECTOR_{setting.upper()}"
            way_out = "or --no-query-server" if setting == "clickhouse_http_endpoint" else "(empty disables)"
            return (
                f"cannot listen on {address} for {setting}: {reason}; choose another with {flags} {way_out}"
            )

        tls_context: ssl.SSLContext | None = None
        if config.tls_cert_file is not None and config.tls_key_file is not None:
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
            self._tls_pair = (config.tls_key_file.read_bytes(), config.tls_cert_file.read_bytes())
        http_address = config.endpoint("http")
        if http_address is not None:
            try:
                self._http = OtlpHttpServer(
                    http_address, ingest, self._metrics_text, self._readiness, self._health, tls_context
                )
                self.http_port = self._http.port
            except OSError as exc:
                problems.append(taken("http_endpoint", config.http_endpoint, exc.strerror or exc))
        if config.serves_store:
            address = _store_address(config.clickhouse_http_endpoint)
            listening = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
            try:
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listening.bind(address)
                listening.listen(128)
            except OSError as exc:
                listening.close()
                problems.append(
                    taken("clickhouse_http_endpoint", config.clickhouse_http_endpoint, exc.strerror or exc)
                )
            else:
                self._store_socket = listening
                host, port = listening.getsockname()[:2]
                self._store_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        grpc_address = config.endpoint("grpc")
        if grpc_address is not None and not problems:
            try:
                self._grpc, self.grpc_port = start_grpc_server(
                    grpc_address, ingest, max_workers=config.max_concurrent_requests, tls=self._tls_pair
                )
            except (OSError, RuntimeError):
                problems.append(taken("grpc_endpoint", config.grpc_endpoint, "address already in use"))
        elif grpc_address is not None and _port_taken(grpc_address):
            problems.append(taken("grpc_endpoint", config.grpc_endpoint, "address already in use"))
        return problems

    def _advertise(self, config: CollectorConfig) -> CollectorConfig:
        """Write ``<store>.owner.json`` (the served address and both passwords); the config with them set."""
        if self._ownership is None or self._store_socket is None:
            return config
        admin = config.clickhouse_http_password or secrets.token_urlsafe(24)
        readonly = config.clickhouse_http_readonly_password or secrets.token_urlsafe(24)
        config = dataclasses.replace(
            config, clickhouse_http_password=admin, clickhouse_http_readonly_password=readonly
        )
        host, port = self._store_socket.getsockname()[:2]
        self._ownership.advertise(host, port, admin, readonly)
        return config

    def _serve_receivers(self) -> None:
        if self._http is not None:
            self._http_thread = threading.Thread(
                target=self._http.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="llmledger-http",
                daemon=True,
            )
            self._http_thread.start()

    def _release(self) -> None:
        """Undo a start that failed: close what was bound, give the store back."""
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None
        if self._http is not None:
            self._http.server_close()
            self._http = None
        self._give_back_store()

    def _give_back_store(self) -> None:
        """Close the spools and the store's socket, then give up the store (a failed start, or a stop once drained)."""
        if self._spools is not None:
            self._spools.close()
            self._spools = None
        if self._store_socket is not None:
            self._store_socket.close()
            self._store_socket = None
        if self._ownership is not None:
            self._ownership.release()
            self._ownership = None

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "grpc_port": self.grpc_port, "http_port": self.http_port}
        path = self.config.data_dir / "collector.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, path)

    # -- self-observability ----------------------------------------------------------------

    def _register_gauges(self, spools: Spools, drain: DrainProcess) -> None:
        metrics = self.metrics

        def status(read: Callable[[DrainStatus], float]) -> Callable[[], float]:
            def value() -> float:
                now = drain.status  # read once: a restart sets it to None meanwhile
                # NaN until the drain process has reported (it is starting or restarting).
                return float("nan") if now is None else float(read(now))

            return value

        metrics.counter_from(
            "spool_damaged_bytes",
            "Spool bytes skipped as damaged (CRC mismatch), never delivered",
            status(lambda now: now.spool_damaged_bytes),
        )
        metrics.gauge(
            "spool_bytes",
            "Bytes of spool segment files on disk (every signal's spool)",
            lambda: spools.total_bytes,
        )
        metrics.gauge(
            "spool_pending_bytes", "Spooled bytes not yet in the store", status(lambda now: now.pending_bytes)
        )
        metrics.gauge(
            "spool_lag_seconds",
            "Age of the oldest spooled request not yet in the store",
            status(lambda now: now.lag_seconds),
        )
        metrics.gauge("store_up", "1 when the last store write succeeded", status(lambda now: now.store_up))
        metrics.gauge("drain_restarts", "Times the drain process was restarted", lambda: drain.restarts)

    def _spool_free_bytes(self) -> int | None:
        try:
            stat = os.statvfs(self.config.spool_dir)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def _metrics_text(self) -> str:
        drain = self._drain
        return self.metrics.render(drain.counters() if drain is not None else {})

    def _health(self) -> tuple[bool, str]:
        drain = self._drain
        if drain is None or drain.exit_code() is not None:
            return False, "the drain process is not running"
        fatal = drain.fatal_error
        if fatal:
            return False, f"the drain stopped: {fatal}"
        silent = time.monotonic() - drain.status_at
        if silent > STALLED_DRAIN_SECONDS:
            return False, f"the drain process has not reported for {silent:.0f} s (frozen or stuck)"
        status = drain.status
        inserting = 0.0 if status is None else status.insert_seconds
        if inserting > STUCK_INSERT_SECONDS:
            return False, f"a store insert has not returned for {inserting:.0f} s"
        return True, "ok"

    def _readiness(self) -> tuple[bool, str]:
        ingest = self._ingest
        if ingest is None or not ingest.accepting:
            return False, "not accepting spans (starting or shutting down)"
        spools = self._spools
        if spools is not None and not spools.traces.has_room(self.config.max_request_bytes):
            return False, "the spool is full; spans are refused until the store catches up"
        free = self._spool_free_bytes()
        if free is not None and free < self.config.max_request_bytes:
            return False, f"the disk holding the spool is full ({free} bytes free); spans are refused"
        failure = ingest.spool_failure
        if failure is not None and time.monotonic() - failure[0] < _SPOOL_FAILURE_SECONDS:
            return False, f"spool writes are failing; spans are refused: {failure[1]}"
        healthy, detail = self._health()
        drain = self._drain
        if not healthy or drain is None:
            return True, f"ready (spooling only: {detail})"
        status = drain.status
        store = "store up" if status is not None and status.store_up else "store not written yet or failing"
        if status is not None and status.last_error:
            store += f": {status.last_error}"
        if status is not None and status.query_error:
            store += f"; {status.query_error}"
        return True, f"ready ({store})"

    # -- stopping --------------------------------------------------------------------------

    def stop(self) -> bool:
        """Stop receiving, drain for up to the shutdown timeout; return whether the spool is empty."""
        started = time.monotonic()
        if self._ingest is not None:
            self._ingest.accepting = False
        grpc_stopped = self._grpc.stop(grace=2.0) if self._grpc is not None else None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if grpc_stopped is not None:
            grpc_stopped.wait(3.0)
        drained = True
        if self._drain is not None:
            remaining = max(0.0, self.config.shutdown_timeout_seconds - (time.monotonic() - started))
            drained = self._drain.stop(remaining)
        self._give_back_store()
        if not drained:
            _logger.warning("stopped with spooled spans not yet in the store; kept for the next start")
        _logger.info("collector stopped (spool %s)", "empty" if drained else "kept")
        return drained

    def request_stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        """Signal handler: ask :meth:`run` to stop."""
        del frame
        _logger.info("received %s, shutting down", signal.Signals(signum).name)
        self._stop_requested.set()

    def run(self) -> int:
        """Start, serve until SIGTERM or SIGINT (restarting the drain process if it dies), stop."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        delay = 1.0
        while not self._stop_requested.wait(0.5):
            drain = self._drain
            code = drain.exit_code() if drain is not None else None
            if drain is None or code is None:
                continue
            _logger.error(
                "the drain process exited (code %s, %s); restarting it in %.0f s",
                code,
                drain.fatal_error or "no error reported",
                delay,
            )
            if time.monotonic() - drain.started_at > _RESTART_DELAY_RESET:
                delay = 1.0  # it ran well for a while: this is a new failure, not the same one
            if self._stop_requested.wait(delay):
                break
            drain.restarts += 1
            drain.start()
            delay = min(delay * 2, _MAX_RESTART_DELAY)
        self.stop()
        return 0
