"""Writing a claimed batch piece by piece: the loop every signal's drain shares.

The drain hands :meth:`PiecewiseWriter.deliver` a claimed batch and a function that
inserts one :class:`.pieces.Piece` until it lands (retrying the store's conditions with
back-off as it sees fit) or raises :class:`.pieces.RefusedError` when the store refuses it
for its content. A refused piece is split (:meth:`.pieces.RequestShape.split`), the split
written to the :class:`SplitJournal` before any part is inserted, and a part that cannot be
split goes to the dead-letter file; every other part is written. A replay of the batch
after a crash (same claim, same token) follows the journal: the same parts with the same
tokens, each dropped by the store if it has it already, and a part already in the
dead-letter file stays there.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from .dead_letters import DeadLetterFile
from .metrics import CollectorMetrics
from .pieces import SPLIT_KINDS, Piece, RefusedError, RequestShape, SplitKind, SuspectError
from .spool import SpoolBatch, SpoolError

__all__ = ["Insert", "PiecewiseWriter", "SplitJournal"]


class Insert(Protocol):
    """Inserts one piece until it lands (see :meth:`PiecewiseWriter.deliver`)."""

    def __call__(self, piece: Piece, *, alone: bool = False) -> int | None: ...


class SplitJournal:
    """How the pieces of the batch being written were split, on disk before any part is inserted.

    A replay of the batch (same claim token) after a crash follows the same splits, so each
    part is inserted again with the token it had, never the whole batch under its own.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._claim: str | None = None
        self._splits: dict[str, SplitKind] = {}

    @property
    def recorded(self) -> bool:
        return bool(self._splits)

    def begin(self, claim: str) -> None:
        if claim == self._claim:
            return
        self._claim = claim
        self._splits = {}
        try:
            state: Any = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise SpoolError(f"cannot read {self._path}: {exc}") from exc
        if isinstance(state, dict) and state.get("claim") == claim:  # pyright: ignore[reportUnknownMemberType]
            splits: Any = state.get("splits")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            if isinstance(splits, dict):
                for token, kind in splits.items():  # pyright: ignore[reportUnknownVariableType]
                    if kind in SPLIT_KINDS:
                        self._splits[str(token)] = kind  # pyright: ignore[reportArgumentType, reportUnknownArgumentType]

    def kind(self, token: str) -> SplitKind | None:
        return self._splits.get(token)

    def record(self, token: str, kind: SplitKind) -> None:
        self._splits[token] = kind
        tmp = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as file:
                json.dump({"claim": self._claim, "splits": self._splits}, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:
            raise SpoolError(f"cannot write {self._path}: {exc}") from exc

    def finish(self) -> None:
        """The batch is committed: its splits are history."""
        if self._splits:
            self._path.unlink(missing_ok=True)
        self._splits = {}
        self._claim = None


_SPLIT_WORDS: dict[SplitKind, str] = {"days": "by day", "halves": "halves", "tables": "by table"}


class PiecewiseWriter:
    """Writes one signal's claimed batches, taking apart what the store refuses (see the module doc)."""

    def __init__(
        self,
        shape: RequestShape,
        dead_letters: DeadLetterFile,
        journal: Path,
        metrics: CollectorMetrics,
        logger: logging.Logger,
    ) -> None:
        self._shape = shape
        self._dead_letters = dead_letters
        self._journal = SplitJournal(journal)
        self._metrics = metrics
        self._logger = logger

    def deliver(self, batch: SpoolBatch, insert: Insert) -> tuple[int, int] | None:
        """Write ``batch``: the items (written, dead-lettered), or ``None`` when ``insert`` was cut short.

        ``insert(piece, alone=...)`` returns the items it wrote, ``None`` when shutdown cut its
        retries short, and raises :class:`.pieces.RefusedError` when the store refused the
        piece, :class:`.pieces.SuspectError` when it keeps failing with an error that names
        neither its content nor the store's state. A single item failing so is set aside only
        when the store takes the rest of the batch (it is tried last, then ``alone``), or when
        ``insert`` gives up on it alone.
        """
        shape, journal = self._shape, self._journal
        token = batch.dedup_token
        journal.begin(token)
        written = dead = 0
        reasons: dict[str, int] = {}
        pending = [Piece(token, tuple(record.payload for record in batch.records), batch.span_count)]
        suspect_since_written: int | None = None  # `written` when an unexplained error first split a piece
        deferred: set[str] = set()
        while pending:
            piece = pending.pop()
            kind = journal.kind(piece.token)
            if kind is None and self._dead_letters.has(piece.token):
                dead += piece.items  # set aside before a crash: in the dead-letter file, not the store
                continue
            if kind is not None:
                pending.extend(reversed(shape.split(piece, kind)))
                continue
            alone = piece.token in deferred and not (
                suspect_since_written is not None and written > suspect_since_written
            )
            try:
                landed = insert(piece, alone=alone)
            except RefusedError as refused:
                suspect = isinstance(refused, SuspectError)
                # An unexplained error says nothing of partitions: halves (or tables, see pieces).
                kind = shape.split_kind(piece, "" if suspect else refused.reason)
                parts = shape.split(piece, kind)
                if suspect and suspect_since_written is None:
                    suspect_since_written = written
                if not parts and suspect and piece.token not in deferred and written == suspect_since_written:
                    # Nothing has landed since the error began, so it may be the store's: the
                    # item is tried again after the rest of the batch, and set aside only if
                    # the rest lands (or it fails alone for as long as ``insert`` allows).
                    deferred.add(piece.token)
                    pending.insert(0, piece)
                    continue
                if not parts:
                    dead += self._dead_letter(piece, refused.reason)
                    reasons[refused.reason] = reasons.get(refused.reason, 0) + piece.items
                    continue
                if not journal.recorded:
                    self._logger.warning(
                        "the store refused a batch of %d %s(s) (%s); writing it in parts (%s)",
                        batch.span_count,
                        shape.noun,
                        refused.reason,
                        _SPLIT_WORDS[kind],
                    )
                else:
                    self._logger.debug(
                        "writing %s in parts (%s): %s", piece.token, _SPLIT_WORDS[kind], refused.reason
                    )
                journal.record(piece.token, kind)
                self._metrics.add("split_batches")
                pending.extend(reversed(parts))
                continue
            if landed is None:
                return None
            written += landed
        if reasons:
            # One line per batch, however many pieces it lost: the operator's cue to look.
            self._logger.error(
                "moved %d %s(s) the store refuses to %s (see `llmledger collector dead-letters`): %s",
                dead,
                shape.noun,
                self._dead_letters.path,
                "; ".join(f"{count} {shape.noun}(s): {reason}" for reason, count in reasons.items()),
            )
        return written, dead

    def finish(self) -> None:
        """The batch is committed: forget its splits."""
        self._journal.finish()

    def _dead_letter(self, piece: Piece, reason: str) -> int:
        # One request: the repeated fields of several concatenate into one.
        payload = b"".join(bytes(payload) for payload in piece.payloads)
        if self._dead_letters.add(piece.token, reason, piece.items, payload, signal=self._shape.signal):
            self._metrics.add("dead_letter_records")
        return piece.items
