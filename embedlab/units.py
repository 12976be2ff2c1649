"""Durations and integer lists as people write them on a command line: ``2h``, ``1,2,4,...,64``."""

from __future__ import annotations

import re

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0

_DURATION_UNITS = {"d": SECONDS_PER_DAY, "h": SECONDS_PER_HOUR, "m": 60.0, "s": 1.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([dhms])")


def parse_duration(text: str) -> float:
    """Seconds in ``"2h"``, ``"90m"``, ``"3600s"``, ``"1.5d"``, ``"1h30m"`` or a bare number of seconds."""
    s = text.strip().lower()
    try:
        value = float(s)
    except ValueError:
        parts = _DURATION_PART.findall(s)
        if not parts or _DURATION_PART.sub("", s).strip():
            raise ValueError(f"cannot read duration {text!r}; write e.g. 2h, 90m, 3600s, 1h30m") from None
        value = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if value < 0:
        raise ValueError(f"duration must be >= 0; got {text!r}")
    return value


def parse_ints(text: str) -> list[int]:
    """Comma-separated integers; ``"1,2,4,...,64"`` continues the ratio of the two before ``...``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    out: list[int] = []
    for i, item in enumerate(items):
        if item not in ("...", "…"):
            try:
                out.append(int(float(item)))
            except ValueError:
                raise ValueError(f"not an integer: {item!r} in {text!r}") from None
            continue
        if len(out) < 2 or i + 1 >= len(items) or out[-1] % out[-2] or out[-1] // out[-2] < 2:
            raise ValueError(f"'...' needs two numbers with an integer ratio >= 2 before it "
                             f"and an end after it: {text!r}")
        ratio, end = out[-1] // out[-2], int(float(items[i + 1]))
        while out[-1] * ratio < end:
            out.append(out[-1] * ratio)
    return out


def human_duration(seconds: float) -> str:
    """``"45 s"``, ``"12.5 min"``, ``"32.6 h"`` or ``"10.9 d"``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < SECONDS_PER_HOUR:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * SECONDS_PER_DAY:
        return f"{seconds / SECONDS_PER_HOUR:.1f} h"
    return f"{seconds / SECONDS_PER_DAY:.1f} d"
