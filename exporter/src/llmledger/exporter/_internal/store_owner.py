"""Who owns an embedded store, and where its ClickHouse HTTP interface listens.

chDB locks a store's directory, so one process owns an embedded store. When that process
is ``llmledger collector``, it is the store's server: it takes an exclusive ``flock`` on
``<store>.owner.lock`` for its whole life and advertises itself in ``<store>.owner.json``
(mode 0600: the address, and the two users' passwords — reading the file proves the
caller may read the store's directory, which is the access an embedded store gives anyway).

- A second collector (or any owner) on the same store fails to take the lock and is told
  which process owns the store and where it serves.
- The lock, not the file, says whether the owner is alive: a file whose lock nobody holds
  was left by a process that died, and the next owner replaces it.
- An owner removes the file on exit only if it still carries that owner's instance id, so
  no process ever removes a file it did not write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "ADMIN_USER",
    "READONLY_USER",
    "OwnerRecord",
    "StoreOwned",
    "StoreOwnership",
    "current_owner",
    "owner_file",
]

# The two credentials of the collector's ClickHouse HTTP interface.
ADMIN_USER: Final = "llmledger"
READONLY_USER: Final = "llmledger_readonly"


class StoreOwned(RuntimeError):
    """Another live process owns the embedded store."""

    def __init__(self, store: Path, owner: OwnerRecord | None) -> None:
        self.store = store
        self.owner = owner
        if owner is None:
            who = "another llmledger collector (its endpoint file is missing or unreadable)"
        else:
            who = f"llmledger collector PID {owner.pid}, serving http://{owner.host}:{owner.port}"
        super().__init__(f"the embedded store {store} is owned by {who}")


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """What ``<store>.owner.json`` says: the owner and how to reach its ClickHouse HTTP interface."""

    pid: int
    instance: str
    host: str
    port: int
    admin_password: str
    readonly_password: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def owner_file(store: Path) -> Path:
    """``<store>.owner.json``, beside the store's directory."""
    return store.with_name(store.name + ".owner.json")


def _lock_file(store: Path) -> Path:
    return store.with_name(store.name + ".owner.lock")


def _read_record(path: Path) -> OwnerRecord | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return OwnerRecord(
            pid=int(document["pid"]),
            instance=str(document["instance"]),
            host=str(document["host"]),
            port=int(document["port"]),
            admin_password=str(document["admin_password"]),
            readonly_password=str(document["readonly_password"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _lock_is_held(store: Path) -> bool:
    """Whether some process holds ``<store>.owner.lock`` (without taking it for longer than a probe)."""
    try:
        fd = os.open(_lock_file(store), os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def current_owner(store: Path) -> OwnerRecord | None:
    """The live collector that owns ``store``, or ``None`` (no owner, or a dead one's stale file)."""
    record = _read_record(owner_file(store))
    if record is None or not _lock_is_held(store):
        return None
    return record


class StoreOwnership:
    """Held by the collector for its whole life: the lock, and the endpoint file it wrote."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.instance = secrets.token_hex(8)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the store, or raise :class:`StoreOwned` naming the live owner."""
        path = _lock_file(self.store)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreOwned(self.store, _read_record(owner_file(self.store))) from None
            raise
        self._fd = fd

    def advertise(self, host: str, port: int, admin_password: str, readonly_password: str) -> OwnerRecord:
        """Write the endpoint file (atomically, mode 0600), replacing a dead owner's."""
        record = OwnerRecord(os.getpid(), self.instance, host, port, admin_password, readonly_password)
        path = owner_file(self.store)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(asdict(record), file)
        os.replace(tmp, path)
        return record

    def release(self) -> None:
        """Remove the endpoint file if it is still ours, then let go of the lock."""
        if self._fd is None:
            return
        path = owner_file(self.store)
        record = _read_record(path)
        if record is not None and record.instance == self.instance:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
