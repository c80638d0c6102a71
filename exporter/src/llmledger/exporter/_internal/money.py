"""How money and missing attribution read in every output people see (report, CSV, JSON, ``sql``).

Amounts come out of the store as ``Decimal(38, 12)``; Python's ``str`` writes small ones in
exponent form (``6.00000E-7``, ``0E-12``), which spreadsheets and people misread. Amounts
are written as plain decimals with every significant digit and no padding zeros. A cost
that is not known is written as ``unpriced`` for people and as ``null`` (JSON) or an empty
cell (CSV) for machines — never as 0.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

__all__ = ["UNATTRIBUTED", "UNPRICED", "plain_decimal"]

UNPRICED: Final = "unpriced"
"""What a table shows for a cost that is not known."""
UNATTRIBUTED: Final = "(unattributed)"
"""What a table shows for calls without a tenant (the dashboards' name for them)."""


def plain_decimal(amount: Decimal) -> str:
    """``Decimal('6.00000E-7')`` → ``'0.0000006'``; ``0E-12`` → ``'0'``; exact, whatever the context precision."""
    text = format(amount, "f")  # 'f' never rounds and never uses an exponent
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
