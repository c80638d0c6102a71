"""HTTP/1.1 chunked request bodies (RFC 9112 §7.1), read under a size limit.

The OpenTelemetry JS exporters (Node's ``http`` module) always send
``Transfer-Encoding: chunked`` and no ``Content-Length``. :func:`read_chunked` reads such
a body from the connection and counts its bytes while it reads: past ``limit`` it stops at
once (the rest is never buffered) and raises :class:`ChunkedTooLargeError`; a body that
ends before its last chunk, or whose framing is broken, raises
:class:`ChunkedBodyError`. Either way nothing of it reaches the spool, and the connection
has to be closed (its framing is lost). Chunk extensions and trailer fields are read and
ignored, as the RFC allows.
"""

from __future__ import annotations

from typing import Final, Protocol

__all__ = ["ChunkedBodyError", "ChunkedTooLargeError", "read_chunked"]

# A chunk-size line is a few hex digits plus optional extensions; a trailer field is a
# header line. Longer lines are refused rather than buffered.
_MAX_LINE: Final = 4096
_MAX_TRAILER_LINES: Final = 64
_HEX_DIGITS: Final = frozenset(b"0123456789abcdefABCDEF")


class ChunkedBodyError(ValueError):
    """The chunked body is malformed or ends early (HTTP 400)."""


class ChunkedTooLargeError(ChunkedBodyError):
    """The chunked body is over the size limit (HTTP 413)."""


class _Readable(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...

    def read(self, size: int = -1, /) -> bytes: ...


def _line(stream: _Readable, what: str) -> bytes:
    line = stream.readline(_MAX_LINE + 1)
    if not line:
        raise ChunkedBodyError(f"the connection closed before the {what} arrived (chunked body cut off)")
    if len(line) > _MAX_LINE:
        raise ChunkedBodyError(f"the {what} is longer than {_MAX_LINE} bytes")
    if not line.endswith(b"\n"):
        raise ChunkedBodyError(f"the connection closed inside the {what} (chunked body cut off)")
    # CRLF per the RFC; a bare LF is tolerated, as most servers do.
    return line[:-2] if line.endswith(b"\r\n") else line[:-1]


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip(b" \t")
    if not digits or not _HEX_DIGITS.issuperset(digits):
        raise ChunkedBodyError(f"invalid chunk size line {line[:40]!r}")
    # Leading zeros are allowed; anything longer than 16 significant digits is over any limit.
    significant = digits.lstrip(b"0")
    if len(significant) > 16:
        raise ChunkedTooLargeError("a chunk size is larger than any body this collector accepts")
    return int(significant or b"0", 16)


def read_chunked(stream: _Readable, limit: int) -> bytes:
    """The decoded body of a chunked request; raises as the module doc says."""
    parts: list[bytes] = []
    total = 0
    while True:
        size = _chunk_size(_line(stream, "chunk size line"))
        if size == 0:
            break
        total += size
        if total > limit:
            raise ChunkedTooLargeError(f"the chunked body is over the {limit}-byte limit")
        data = stream.read(size)
        if len(data) != size:
            raise ChunkedBodyError("the connection closed inside a chunk (chunked body cut off)")
        parts.append(data)
        if _line(stream, "end of a chunk"):
            raise ChunkedBodyError("a chunk is longer than its size line says")
    for _ in range(_MAX_TRAILER_LINES):
        if not _line(stream, "end of the chunked body"):
            return b"".join(parts)
    raise ChunkedBodyError(f"more than {_MAX_TRAILER_LINES} trailer fields")
