"""The one check and the one quoting for names written into SQL (database, cluster, user, table).

Values are always bound as query parameters; identifiers cannot be, so every name that goes
into a statement passes here first. Only plain names are accepted — ``[A-Za-z_][A-Za-z0-9_]*``,
at most 128 characters — because such a name needs no escaping, means the same quoted or
not, and cannot close the backquotes it is put in. Anything else is refused with one message
that names what the name was for, wherever it came from (a flag, a variable, a file).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "IdentifierError",
    "identifier_problem",
    "is_plain_identifier",
    "quote_identifier",
]

# fullmatch, never `^...$`: `$` also matches before a trailing newline.
_PLAIN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_RULE: Final = "[A-Za-z_][A-Za-z0-9_]*, at most 128 characters"


class IdentifierError(ValueError):
    """A name that is not a plain identifier, refused before it reaches any SQL."""


def is_plain_identifier(name: object) -> bool:
    """True when ``name`` may be written into SQL as an identifier."""
    return isinstance(name, str) and _PLAIN.fullmatch(name) is not None


def identifier_problem(name: object, what: str) -> str | None:
    """Why ``name`` cannot serve as ``what`` (e.g. ``"database name"``), or ``None`` when it can.

    For validators that collect every problem before reporting them together.
    """
    if is_plain_identifier(name):
        return None
    return f"{what} {name!r} must be a plain identifier ({_RULE})"


def quote_identifier(name: object, what: str = "identifier") -> str:
    """``name`` in backquotes, ready for SQL; :class:`IdentifierError` when it is not a plain identifier."""
    problem = identifier_problem(name, what)
    if problem is not None:
        raise IdentifierError(problem)
    return f"`{name}`"
