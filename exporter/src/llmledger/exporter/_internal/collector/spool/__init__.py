"""The collector's write-ahead log: append-only segment files of framed OTLP requests.

Two sides, in different processes: :class:`DurableSpool` (:mod:`.writer`) appends in the
receiving process and returns once a record is durable, after which the request is
acknowledged; :class:`SpoolReader` (:mod:`.reader`) claims batches in the drain process
and commits them once they are in the store. :mod:`.format` is the on-disk layout both
share: the record framing, the segment files, the ``durable`` marker and the checkpoint.
"""

from .format import HEADER_SIZE, SpoolError, SpoolRecord, frame_record, scan_records
from .reader import SpoolBatch, SpoolReader
from .writer import DurableSpool, FsyncPolicy, SpoolFullError

__all__ = [
    "HEADER_SIZE",
    "DurableSpool",
    "FsyncPolicy",
    "SpoolBatch",
    "SpoolError",
    "SpoolFullError",
    "SpoolReader",
    "SpoolRecord",
    "frame_record",
    "scan_records",
]
