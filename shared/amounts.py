"""Amount rules: integers in minor units (1.00 = 100), never floats, every sum bounded.

AMOUNT_MAX bounds any single amount and any sum of amounts in one transaction. It is far below
PostgreSQL's bigint (2**63 - 1) and within JSON's exactly representable integers (2**53 - 1), so
an amount survives every hop unchanged.
"""
from __future__ import annotations

import re

from shared.errors import Unprocessable

_MAJOR_RE = re.compile(r"([0-9]+)(?:\.([0-9]{1,2}))?")

MINOR_UNITS_PER_MAJOR = 100
AMOUNT_MAX = 10**15  # minor units: 10 trillion major units


def is_amount(value: object) -> bool:
    """True for a valid amount: an int (not a bool) in 1..AMOUNT_MAX."""
    return type(value) is int and 0 < value <= AMOUNT_MAX


def checked_sum(amounts) -> int | None:
    """Sum of valid amounts, or None as soon as the running total exceeds AMOUNT_MAX."""
    total = 0
    for amount in amounts:
        total += amount
        if total > AMOUNT_MAX:
            return None
    return total


def parse_major(text: str) -> int:
    """Parse a major-unit string with at most two decimals ("12.34") into minor units."""
    text = text.strip()
    match = _MAJOR_RE.fullmatch(text)  # ASCII digits only: "12", "12.3", "12.34"
    if match is None:
        raise Unprocessable(f"not an amount: {text!r} (use e.g. 12.34)", code="amount_invalid")
    whole, frac = match[1], match[2] or "0"
    value = int(whole) * MINOR_UNITS_PER_MAJOR + int(frac.ljust(2, "0"))
    if not is_amount(value):
        raise Unprocessable(f"amount out of range: {text!r}", code="amount_out_of_range")
    return value


def format_major(minor: int) -> str:
    """Minor units as a major-unit string with two decimals: 1234 -> "12.34"."""
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), MINOR_UNITS_PER_MAJOR)
    return f"{sign}{whole}.{frac:02d}"
