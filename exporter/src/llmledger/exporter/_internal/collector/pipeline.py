"""The collector's pipeline, stage by stage, in the order a span takes through it.

::

    receiving process (service.py)           drain process (drain_process.py)
    ──────────────────────────────           ─────────────────────────────────
    1 receive ─► 2 spool ══ segment files ══► 3 drain ─► 4 insert ─► the store
    /metrics, /healthz, /readyz ◄═══════════ 5 report status (messages.py)

1. **Receive** — :mod:`.grpc_receiver` and :mod:`.http_receiver` take OTLP requests and
   decode and validate them (:mod:`.otlp`, :mod:`.otlp_signals`); :class:`.ingest.Ingest`
   authenticates them and bounds how many are decoded at once.
2. **Spool** — :meth:`.ingest.Ingest.store` appends the validated protobuf bytes to their
   signal's spool (:class:`.spool.DurableSpool`) and returns once they are durable; only
   then does the receiver acknowledge. A repeated request is recognised
   (:mod:`.repeats`) and acknowledged without being stored again.
3. **Drain** — in the drain process, one thread per signal claims the next batch from its
   spool (:meth:`.spool.SpoolReader.claim_batch`): a byte range whose claim is on disk
   before anything is inserted, and whose deduplication token is derived from the range.
4. **Insert** — the batch goes into the store as one block under that token
   (:class:`.drain.SpoolDrain` for spans, :class:`.signal_drain.SignalDrain` for metrics
   and logs); what the store refuses for its content is split and dead-lettered
   (:mod:`.piecewise`, :mod:`.pieces`, :mod:`.dead_letters`). Then the spool's cursor moves
   past the batch, with the counts written and dead-lettered (:meth:`.spool.SpoolReader.commit`).
5. **Report status** — :func:`report_status` sums the drains up in a
   :class:`.messages.DrainStatus`, which the drain process sends to the receiving process
   (:class:`.drain_process.DrainProcess`) for ``/metrics``, ``/healthz`` and ``/readyz``.

Each stage is built here from the one configuration (:class:`.config.CollectorConfig`);
the modules named above do the work. The receiving process runs stages 1 and 2
(:class:`.service.Collector`), the drain process stages 3 to 5 (:func:`.drain_process.main`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .config import CollectorConfig
from .drain import SpoolDrain
from .drain_loop import DrainPacing
from .ingest import Ingest
from .messages import DrainStatus
from .metrics import CollectorMetrics
from .otlp_signals import Signal
from .repeats import RecentRequests
from .signal_drain import SignalDrain
from .spool import DurableSpool, SpoolReader

__all__ = [
    "Drains",
    "Spools",
    "drain",
    "metrics_and_logs_drain",
    "open_spools",
    "receive",
    "report_status",
    "traces_drain",
]

# Metrics and logs each have a spool and a drain of their own: one signal filling its
# spool does not hold up the others.
_OTHER_SIGNALS = (Signal.METRICS, Signal.LOGS)


# -- 1. receive ----------------------------------------------------------------------------------


def receive(config: CollectorConfig, spools: Spools, metrics: CollectorMetrics) -> Ingest:
    """What both receivers hand every request to: authentication, admission, the spool."""
    return Ingest(
        spools.traces,
        metrics,
        token=config.bearer_token(),
        max_request_bytes=config.max_request_bytes,
        max_concurrent_requests=config.max_concurrent_requests,
        signal_spools=spools.others,
        recent=RecentRequests(path=config.data_dir / "recent-requests.bin"),
    )


# -- 2. spool ------------------------------------------------------------------------------------


@dataclass
class Spools:
    """Every signal's spool, appending side (the receiving process)."""

    traces: DurableSpool
    others: dict[Signal, DurableSpool] = field(default_factory=dict[Signal, DurableSpool])

    @property
    def total_bytes(self) -> int:
        return self.traces.total_bytes + sum(spool.total_bytes for spool in self.others.values())

    def close(self) -> None:
        self.traces.close()
        for spool in self.others.values():
            spool.close()


def open_spools(config: CollectorConfig) -> Spools:
    """Open (and recover) every signal's spool; :class:`.spool.SpoolError` when one cannot be opened."""
    spools = Spools(_spool(config, Signal.TRACES))
    try:
        for signal in _OTHER_SIGNALS:
            spools.others[signal] = _spool(config, signal)
    except BaseException:
        spools.close()
        raise
    return spools


def _spool(config: CollectorConfig, signal: Signal) -> DurableSpool:
    return DurableSpool(
        config.signal_spool_dir(signal),
        max_bytes=config.spool_max_bytes,
        segment_bytes=config.spool_segment_bytes,
        fsync=config.fsync,
    )


# -- 3. drain and 4. insert ----------------------------------------------------------------------


def traces_drain(config: CollectorConfig, reader: SpoolReader, metrics: CollectorMetrics) -> SpoolDrain:
    """The spans' drain: claims batches from ``reader`` and inserts them; it owns the store connection."""
    return SpoolDrain(
        reader,
        config.store,
        metrics,
        _pacing(config),
        dead_letter_dir=config.dead_letter_dir,
        unexplained_error_seconds=config.unexplained_error_seconds,
        apply_schema=config.apply_schema,
        native_insert_file=config.data_dir / "native-batch.pb" if config.native_insert else None,
    )


def metrics_and_logs_drain(
    config: CollectorConfig,
    signal: Signal,
    reader: SpoolReader,
    traces: SpoolDrain,
    metrics: CollectorMetrics,
) -> SignalDrain:
    """The metrics' or the logs' drain; it writes through ``traces``' store connection."""
    return SignalDrain(
        signal, reader, traces, metrics, _pacing(config), dead_letter_dir=config.dead_letter_dir
    )


def _pacing(config: CollectorConfig) -> DrainPacing:
    return DrainPacing(
        batch_max_items=config.batch_max_spans,
        batch_max_bytes=config.batch_max_bytes,
        batch_linger_seconds=config.batch_linger_seconds,
        retry_initial_seconds=config.retry_initial_seconds,
        retry_max_seconds=config.retry_max_seconds,
    )


@dataclass
class Drains:
    """Every signal's drain (the drain process): a thread each, started by :meth:`start`."""

    traces: SpoolDrain
    traces_reader: SpoolReader
    others: list[SignalDrain]

    @property
    def readers(self) -> list[SpoolReader]:
        return [self.traces_reader, *(other.reader for other in self.others)]

    @property
    def failed(self) -> bool:
        """Whether a drain stopped on an error it cannot go past (the drain process then exits)."""
        return self.traces.fatal_error is not None or any(other.fatal_error for other in self.others)

    def start(self) -> None:
        self.traces.start()
        for other in self.others:
            other.start()

    def stop(self, timeout: float) -> bool:
        """Drain for at most ``timeout`` seconds, then stop; whether every spool was emptied."""
        deadline = time.monotonic() + timeout
        # The metrics and logs drains write through the traces drain's connection: stop them first.
        drained = all([other.stop(max(0.0, deadline - time.monotonic())) for other in self.others])
        return self.traces.stop(max(0.0, deadline - time.monotonic())) and drained

    def close(self) -> None:
        """Let go of the spools (after :meth:`stop`)."""
        for reader in self.readers:
            reader.close()


def drain(config: CollectorConfig, metrics: CollectorMetrics) -> Drains:
    """Every signal's spool reader and drain, not started yet."""
    reader = SpoolReader(config.spool_dir)
    traces = traces_drain(config, reader, metrics)
    others = [
        metrics_and_logs_drain(config, signal, SpoolReader(config.signal_spool_dir(signal)), traces, metrics)
        for signal in _OTHER_SIGNALS
    ]
    return Drains(traces, reader, others)


# -- 5. report status ----------------------------------------------------------------------------


def report_status(
    drains: Drains,
    metrics: CollectorMetrics,
    query_port: int | None,
    query_error: str | None,
) -> DrainStatus:
    """Where the drains stand, for the receiving process (see :class:`.messages.DrainStatus`)."""
    traces, others, readers = drains.traces, drains.others, drains.readers
    fatal = [f"{other.signal.value}: {other.fatal_error}" for other in others if other.fatal_error]
    if traces.fatal_error is not None:
        fatal.insert(0, str(traces.fatal_error))
    errors = [f"{other.signal.value}: {other.last_error}" for other in others if other.last_error]
    if traces.last_error:
        errors.insert(0, traces.last_error)
    inserting_since = traces.inserting_since
    return DrainStatus(
        counters=metrics.snapshot(),
        durable_counters=_merged(reader.totals for reader in readers),
        durable_counters_at_open=_merged(reader.totals_at_open for reader in readers),
        insert_seconds=0.0 if inserting_since is None else time.monotonic() - inserting_since,
        spool_damaged_bytes=sum(reader.skipped_bytes for reader in readers),
        pending_bytes=sum(reader.pending_bytes() for reader in readers),
        lag_seconds=max(reader.lag_seconds if reader.has_data() else 0.0 for reader in readers),
        store_up=traces.store_connected and not any(other.last_error for other in others),
        last_error="; ".join(errors) or None,
        fatal_error="; ".join(fatal) or None,
        query_port=query_port,
        query_error=query_error,
    )


def _merged(totals: Iterable[Mapping[str, int]]) -> dict[str, int]:
    # Each signal's spool commits counters of its own names ("written_spans", "written_data_points" …).
    merged: dict[str, int] = {}
    for one in totals:
        merged.update(one)
    return merged
