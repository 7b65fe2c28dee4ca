"""Byte units: the constants, the one GiB formatter and the one size parser.

Figures are stored in bytes (or blocks, tokens) and rounded only here, when shown.
"""

from __future__ import annotations

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40

Bytes = int | float
"""A byte count. Integers where kvprobe counted them; floats where an engine logged GiB figures."""

_SIZE_UNITS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}


def gib(value: float | None, digits: int = 2, unit: bool = False, sign: bool = False) -> str:
    """Bytes as GiB for display ('-' when unknown); `sign` writes + before a positive difference."""
    if value is None:
        return "-"
    text = f"{value / GIB:{'+' if sign else ''}.{digits}f}"
    return f"{text} GiB" if unit else text


def parse_size(text: str) -> int:
    """'2g', '512MiB', '1073741824' -> bytes; ValueError names what was not understood."""
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    suffix = cleaned[-1] if cleaned and cleaned[-1] in _SIZE_UNITS else ""
    number = cleaned[:-1] if suffix else cleaned
    try:
        size = float(number) * _SIZE_UNITS[suffix]
    except ValueError:
        raise ValueError(f"cannot read size {text!r} (examples: 2g, 512m, 1073741824)") from None
    if not 0 <= size < 1 << 62:  # also NaN and infinity
        raise ValueError(f"size {text!r} must be a positive number of bytes")
    return int(size)
